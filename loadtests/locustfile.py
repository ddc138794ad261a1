"""Locust users for an OpenAI-compatible endpoint (Sluice, or any server), streaming.

Each request's time to first token, time per output token and end-to-end latency are reported
as extra locust entries of type `LLM` named `TTFT`, `TPOT` and `E2E` (milliseconds), next to the
HTTP entry (which locust times to the response headers only). `--csv` writes them with the rest.

    pip install -e '.[loadtest]'
    locust -f loadtests/locustfile.py --host http://127.0.0.1:8080 --headless \\
        -u 32 -r 8 -t 60s --csv reports/locust --tags shared-prefix

Workloads are locust tags (without `--tags` every workload runs, equally often):

- `shared-prefix`: chat with one of SLUICE_GROUPS long system prompts + a unique question;
- `multi-lora`: unique prompts to the LoRA adapters in SLUICE_ADAPTERS;
- `mixed`: shared-prefix chat with `x-gateway-inference-objective` drawn from
  SLUICE_OBJECTIVES and `x-gateway-inference-fairness-id` from SLUICE_TENANTS tenants;
- `ab`: shared-prefix chat to the weighted model names in SLUICE_AB_MODELS (an A/B test from
  the client's side; `SLUICE_AB_MODELS=sql` drives the gateway-side split of
  config/examples/inference-policy.yaml instead).

Environment (defaults in brackets): SLUICE_MODEL [meta-llama/Llama-3.1-8B-Instruct],
SLUICE_GROUPS [16], SLUICE_SYSTEM_TOKENS [1000], SLUICE_QUESTION_TOKENS [50],
SLUICE_PROMPT_TOKENS [500], SLUICE_MAX_TOKENS [100], SLUICE_ADAPTERS [sql-lora,chat-lora],
SLUICE_OBJECTIVES [interactive=1,batch=3], SLUICE_TENANTS [8],
SLUICE_AB_MODELS [<SLUICE_MODEL>=1,chat-lora=1], SLUICE_USER_RPS [0.5]: each user
sends at most this many requests per second, so `-u` sets the offered load while latencies stay
below 1/SLUICE_USER_RPS (locust users are closed loop; `sluice loadtest` is the open-loop tool).
"""

import os
import random
import time
from collections.abc import Mapping
from typing import Any

from locust import HttpUser, constant_throughput, tag, task

from loadtests.scenario import ScenarioError, Workload, parse_workload
from loadtests.workload import PlannedRequest, RequestFactory, StreamTally

METRIC_TYPE = "LLM"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _weighted(text: str) -> list[dict[str, Any]]:
    """`a=3,b` → [{name: a, weight: 3}, {name: b, weight: 1}]."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition("=")
        out.append({"name": name, "weight": float(weight or 1)})
    return out


def _workloads() -> Mapping[str, Workload]:
    model = _env("SLUICE_MODEL", "meta-llama/Llama-3.1-8B-Instruct")
    common = {
        "groups": int(_env("SLUICE_GROUPS", "16")),
        "system_prompt_tokens": int(_env("SLUICE_SYSTEM_TOKENS", "1000")),
        "question_tokens": int(_env("SLUICE_QUESTION_TOKENS", "50")),
        "prompt_tokens": int(_env("SLUICE_PROMPT_TOKENS", "500")),
        "max_tokens": int(_env("SLUICE_MAX_TOKENS", "100")),
        "models": [{"name": model}],
    }
    raw = {
        "shared-prefix": {"kind": "shared-prefix", **common},
        "multi-lora": {
            **common,
            "kind": "random",
            "models": _weighted(_env("SLUICE_ADAPTERS", "sql-lora,chat-lora")),
        },
        "mixed": {
            **common,
            "objectives": _weighted(_env("SLUICE_OBJECTIVES", "interactive=1,batch=3")),
            "tenants": int(_env("SLUICE_TENANTS", "8")),
        },
        "ab": {
            **common,
            "models": _weighted(_env("SLUICE_AB_MODELS", f"{model}=1,chat-lora=1")),
        },
    }
    issues: list[str] = []
    parsed = {name: parse_workload(body, name, issues) for name, body in raw.items()}
    if issues:
        raise ScenarioError(issues)
    return parsed


WORKLOADS = _workloads()
FACTORIES = {
    name: RequestFactory(w, default_model=_env("SLUICE_MODEL", ""), seed=0)
    for name, w in WORKLOADS.items()
}


class OpenAIStreamingUser(HttpUser):
    """One simulated client; see the module docstring for workloads and settings."""

    wait_time = constant_throughput(float(_env("SLUICE_USER_RPS", "0.5")))

    def on_start(self) -> None:
        self.rng = random.Random()

    @tag("shared-prefix")
    @task
    def shared_prefix(self) -> None:
        self._request("shared-prefix")

    @tag("multi-lora")
    @task
    def multi_lora(self) -> None:
        self._request("multi-lora")

    @tag("mixed")
    @task
    def mixed(self) -> None:
        self._request("mixed")

    @tag("ab")
    @task
    def ab(self) -> None:
        self._request("ab")

    def _request(self, workload: str) -> None:
        plan = FACTORIES[workload].next(self.rng)
        start = time.perf_counter()
        name = f"{plan.path} [{workload}]"
        kwargs: dict[str, Any] = {"data": plan.body, "headers": plan.headers, "name": name}
        with self.client.post(plan.path, stream=True, catch_response=True, **kwargs) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return
            first, tally = self._read(resp, start)
            if tally.error is not None or first is None:
                resp.failure(tally.error or "no token in the response")
                return
        self._report(plan, start, first, tally)

    def _read(self, resp: Any, start: float) -> tuple[float | None, StreamTally]:
        """Read the SSE body as it arrives; the time of the first frame with text."""
        tally, first = StreamTally(), None
        if "text/event-stream" not in resp.headers.get("Content-Type", ""):
            body = resp.json()
            tally.usage_tokens = int((body.get("usage") or {}).get("completion_tokens", 0))
            return time.perf_counter(), tally
        # chunk_size=None yields each HTTP chunk as it arrives (one SSE frame per token).
        for chunk in resp.iter_content(chunk_size=None):
            if tally.feed(chunk) and first is None:
                first = time.perf_counter()
        return first, tally

    def _report(self, plan: PlannedRequest, start: float, first: float, tally: StreamTally) -> None:
        end = time.perf_counter()
        values = {"TTFT": first - start, "E2E": end - start}
        if tally.tokens > 1:
            values["TPOT"] = (end - first) / (tally.tokens - 1)
        for name, seconds in values.items():
            self.environment.events.request.fire(
                request_type=METRIC_TYPE,
                name=name,
                response_time=seconds * 1000,
                response_length=tally.tokens,
                exception=None,
                context={"model": plan.model},
            )
