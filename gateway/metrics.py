"""Every metric Sluice exports, on a registry owned by one gateway (never the global one).

Label sets are bounded: routes, backends and pools come from the config (bounded by it);
status is a class (2xx, 4xx...) or a reason from a fixed list.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics", "code_class"]

LATENCY_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip


TOKEN_BUCKETS = (1, 8, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 131072)
TPOT_BUCKETS_S = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)


def code_class(status: int) -> str:
    return f"{status // 100}xx"


@dataclass(frozen=True, slots=True)
class Metrics:
    registry: CollectorRegistry
    requests: Counter
    request_duration: Histogram
    upstream_errors: Counter
    in_flight: Gauge
    stream_aborts: Counter
    retries: Counter
    mirrors: Counter
    reloads: Counter
    reload_failures: Counter
    config_timestamp: Gauge
    rejected_requests: Counter
    objective_requests: Counter
    objective_errors: Counter
    objective_duration: Histogram
    objective_input_tokens: Histogram
    objective_output_tokens: Histogram
    ttft: Histogram
    tpot: Histogram
    e2e: Histogram
    model_labels: set[str]
    rollout_weight: Gauge
    rollout_transitions: Counter
    shadow: Counter
    queue_length: Gauge
    queue_wait: Histogram
    saturation: Gauge
    sheddable_limit: Gauge
    activation: Gauge

    @classmethod
    def create(cls) -> Metrics:
        r = CollectorRegistry(auto_describe=True)
        return cls(
            registry=r,
            requests=Counter(
                "sluice_requests",
                "Requests answered, by route, backend and status class.",
                ["route", "backend", "code"],
                registry=r,
            ),
            request_duration=Histogram(
                "sluice_request_duration_seconds",
                "Time from request start to the end of the response, by route.",
                ["route"],
                buckets=LATENCY_BUCKETS_S,
                registry=r,
            ),
            upstream_errors=Counter(
                "sluice_upstream_errors",
                "Failed upstream attempts, by backend and reason.",
                ["backend", "reason"],
                registry=r,
            ),
            in_flight=Gauge("sluice_in_flight_requests", "Requests being proxied now.", registry=r),
            stream_aborts=Counter(
                "sluice_stream_aborts",
                "Responses cut after their first byte, by reason.",
                ["reason"],
                registry=r,
            ),
            retries=Counter(
                "sluice_retries", "Upstream attempts retried, by route.", ["route"], registry=r
            ),
            mirrors=Counter(
                "sluice_mirror_requests",
                "Mirrored copies, by result (sent, dropped, failed).",
                ["result"],
                registry=r,
            ),
            reloads=Counter(
                "sluice_config_reloads",
                "Config loads, by result (ok, invalid).",
                ["result"],
                registry=r,
            ),
            reload_failures=Counter(
                "sluice_config_reload_failures",
                "Config reloads refused because the new config was invalid.",
                registry=r,
            ),
            config_timestamp=Gauge(
                "sluice_config_last_reload_success_timestamp_seconds",
                "When the config in force was loaded.",
                registry=r,
            ),
            objective_requests=Counter(
                "inference_objective_request",
                "Inference requests, by requested and target model.",
                ["model_name", "target_model_name"],
                registry=r,
            ),
            objective_errors=Counter(
                "inference_objective_request_error",
                "Inference requests answered with an error, by model and status.",
                ["model_name", "target_model_name", "error_code"],
                registry=r,
            ),
            objective_duration=Histogram(
                "inference_objective_request_duration_seconds",
                "End-to-end time of successful inference requests.",
                ["model_name", "target_model_name"],
                buckets=LATENCY_BUCKETS_S,
                registry=r,
            ),
            objective_input_tokens=Histogram(
                "inference_objective_input_tokens",
                "Prompt tokens of successful inference requests.",
                ["model_name", "target_model_name"],
                buckets=TOKEN_BUCKETS,
                registry=r,
            ),
            objective_output_tokens=Histogram(
                "inference_objective_output_tokens",
                "Output tokens of successful inference requests.",
                ["model_name", "target_model_name"],
                buckets=TOKEN_BUCKETS,
                registry=r,
            ),
            ttft=Histogram(
                "sluice_time_to_first_token_seconds",
                "Time to the first streamed token, by target model and variant.",
                ["model", "variant"],
                buckets=LATENCY_BUCKETS_S,
                registry=r,
            ),
            tpot=Histogram(
                "sluice_time_per_output_token_seconds",
                "Time per output token after the first, by target model and variant.",
                ["model", "variant"],
                buckets=TPOT_BUCKETS_S,
                registry=r,
            ),
            e2e=Histogram(
                "sluice_e2e_request_seconds",
                "End-to-end time of successful inference requests, by model and variant.",
                ["model", "variant"],
                buckets=LATENCY_BUCKETS_S,
                registry=r,
            ),
            model_labels=set(),
            rollout_weight=Gauge(
                "sluice_rollout_candidate_weight",
                "The candidate's share (0..100) in each Rollout.",
                ["rollout"],
                registry=r,
            ),
            rollout_transitions=Counter(
                "sluice_rollout_transitions",
                "Rollout phase and step changes, by rollout and phase.",
                ["rollout", "phase"],
                registry=r,
            ),
            shadow=Counter(
                "sluice_shadow_requests",
                "Shadow copies of requests, by result (sent, dropped, failed).",
                ["result"],
                registry=r,
            ),
            queue_length=Gauge(
                "sluice_gateway_queue_length",
                "Requests held in the gateway's queue, by pool.",
                ["pool"],
                registry=r,
            ),
            queue_wait=Histogram(
                "sluice_gateway_queue_wait_seconds",
                "Time requests spent in the gateway's queue before dispatch, by pool.",
                ["pool"],
                buckets=LATENCY_BUCKETS_S,
                registry=r,
            ),
            saturation=Gauge(
                "sluice_pool_saturation",
                "Fraction of a pool's endpoints (with fresh signals) without headroom.",
                ["pool"],
                registry=r,
            ),
            sheddable_limit=Gauge(
                "sluice_pool_sheddable_limit_ratio",
                "Share of a pool's slots sheddable requests may hold (a TrafficPolicy's "
                "sheddableLimit; it moves when sheddableTTFTObjective adapts it).",
                ["pool"],
                registry=r,
            ),
            activation=Gauge(
                "sluice_pool_activation",
                "1 while a pool with no ready endpoint holds requests (scale from zero).",
                ["pool"],
                registry=r,
            ),
            rejected_requests=Counter(
                "sluice_rejected_requests",
                "Requests refused by admission control, by pool and reason.",
                ["pool", "reason"],
                registry=r,
            ),
        )
