"""Closed-loop scenarios: frozen dataclasses and the one strict parser from the YAML form.

Decides what a run means (replica template, workload, the offered-load curve, the SLO, the
scaling bounds and delays, the compared policies) and rejects a bad scenario with every issue
and its path before anything starts. Never touches sockets, processes or clocks. The format is
documented in `loadtests/scenarios/closed-loop.yaml`.
"""

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

from loadtests.fields import Fields

from ..fleet import ReplicaSpec
from ..scenario import ScenarioError, Workload, check_name, parse_fleet, parse_workload
from .arrivals import RateProfile

DEFAULT_POOL = "llama"
HPA_SYNC_S = 15.0


class ClosedLoopError(ScenarioError):
    """A closed-loop scenario is invalid; `issues` lists every problem with its path."""

    code = "closed_loop_scenario_invalid"


class RuleKind(enum.StrEnum):
    SLUICE = "sluice"  # follow the gateway's desiredReplicas (GET /autoscaling/{ns}/{pool})
    UTILISATION = "utilisation"  # an HPA on the replicas' average utilisation


class UtilisationMetric(enum.StrEnum):
    BUSY = "busy"  # running sequences / max_num_seqs, per replica
    KV = "kv"  # KV-cache usage (vllm:kv_cache_usage_perc), per replica


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Slo:
    ttft_s: float = 1.0  # a request over this TTFT (or failed) misses the SLO
    window_s: float = 10.0  # a window misses when its TTFT percentile is over ttft_s
    percentile: float = 99.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Scaling:
    """What both policies share: bounds, how a replica starts and stops, the tick."""

    min_replicas: int = 1
    max_replicas: int = 6
    startup_s: float = 15.0  # from the scale-up decision until the replica serves
    drain_grace_s: float = 1.0  # after the reload that removes a replica, before waiting
    drain_timeout_s: float = 60.0  # then stop it even if requests are still open
    tick_s: float = 1.0  # how often a reconciler looks and acts


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """One compared autoscaler. `sluice`: the reconciler applies the gateway's recommendation
    (its TrafficPolicy `autoscaling:` is `autoscaling`), every tick or, with `sync_s`, once
    per sync period as the HPA that KEDA or prometheus-adapter feed would. `utilisation`:
    Kubernetes' HPA algorithm on `metric` against `target`, with its tolerance, sync period
    (default 15 s), scale-down stabilisation and default scale-up policy (max of +4 pods and
    +100 % per sync)."""

    name: str
    kind: RuleKind
    autoscaling: Mapping[str, Any] | None = None
    metric: UtilisationMetric = UtilisationMetric.BUSY
    target: float = 0.6
    tolerance: float = 0.1
    sync_s: float = 0.0  # 0: every tick
    metric_window_s: float = 15.0  # the utilisation is averaged over this (avg_over_time)
    stabilization_s: float = 300.0
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ClosedLoopScenario:
    name: str
    description: str
    time_scale: float
    seed: int  # fleet engines, arrivals and request contents
    replica: ReplicaSpec  # every replica is one of these
    workload: Workload
    raw_workload: Mapping[str, Any]  # handed to the load generator process as is
    replica_capacity_rps: float | None  # one replica at 100 %, for the plot's guide line
    load: RateProfile
    drain_s: float
    request_timeout_s: float
    max_in_flight: int
    slo: Slo
    scaling: Scaling
    pool: str
    traffic: Mapping[str, Any]  # the TrafficPolicy spec of every gateway (targetRefs added)
    concurrent: bool
    policies: tuple[Policy, ...]

    def traffic_for(self, policy: Policy) -> dict[str, Any]:
        """The TrafficPolicy spec of `policy`'s gateway: the shared one, its own
        `autoscaling:` if it has one, and the scaling bounds unless given."""
        spec = dict(self.traffic)
        autoscaling = dict(policy.autoscaling or spec.get("autoscaling") or {})
        autoscaling.setdefault("minReplicas", self.scaling.min_replicas)
        autoscaling.setdefault("maxReplicas", self.scaling.max_replicas)
        spec["autoscaling"] = autoscaling
        spec["targetRefs"] = [
            {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": self.pool}
        ]
        return spec


_TOP_KEYS = frozenset(
    {
        *("name", "description", "fleet", "workload", "replica_capacity_rps", "load", "slo"),
        *("drain_s", "request_timeout_s", "max_in_flight", "seed", "scaling", "gateway"),
        *("concurrent", "policies", "quick"),
    }
)
_POLICY_KEYS = frozenset(
    {f.name for f in dataclasses.fields(Policy)} | {"quick"},
)


def parse_closed_loop(raw: object, *, quick: bool = False) -> ClosedLoopScenario:
    """Build a scenario from its YAML form; raises `ClosedLoopError` listing every issue.

    With `quick`, the `quick:` section replaces top-level keys (`scaling` and `slo` are merged
    key by key) and each policy's own `quick:` section is merged into it."""
    issues: list[str] = []
    if quick and isinstance(raw, Mapping):
        raw = _with_quick(raw, issues)
    top = Fields(raw, "", issues, _TOP_KEYS)
    fleet = parse_fleet(top.raw.get("fleet", {}), issues)
    raw_workload = top.get("workload", dict, {})
    workload = parse_workload(raw_workload, "workload", issues)
    gateway = Fields(top.raw.get("gateway", {}), "gateway", issues, frozenset({"pool", "traffic"}))
    scaling = _parse_scaling(top.raw.get("scaling", {}), issues)
    capacity = top.raw.get("replica_capacity_rps")
    scenario = ClosedLoopScenario(
        name=check_name(top.get("name", str, ""), "name", issues),
        description=top.get("description", str, ""),
        time_scale=fleet.time_scale,
        seed=top.get("seed", int, 0),
        replica=fleet.replicas[0] if fleet.replicas else ReplicaSpec(),
        workload=workload,
        raw_workload=raw_workload,
        replica_capacity_rps=(
            top.positive("replica_capacity_rps", float, 1.0) if capacity is not None else None
        ),
        load=_parse_load(top.raw.get("load"), issues),
        drain_s=top.positive("drain_s", float, 30.0, zero_ok=True),
        request_timeout_s=top.positive("request_timeout_s", float, 60.0),
        max_in_flight=top.positive("max_in_flight", int, 2048),
        slo=_parse_slo(top.raw.get("slo", {}), issues),
        scaling=scaling,
        pool=check_name(gateway.get("pool", str, DEFAULT_POOL), "gateway.pool", issues),
        traffic=gateway.get("traffic", dict, {}),
        concurrent=top.get("concurrent", bool, True),
        policies=_parse_policies(top.raw.get("policies"), issues),
    )
    if len(fleet.replicas) > 1 and len(set(fleet.replicas)) > 1:
        issues.append("fleet.replicas: one replica template (every replica is the same)")
    if issues:
        raise ClosedLoopError(issues)
    return scenario


def _with_quick(raw: Mapping[str, Any], issues: list[str]) -> dict[str, Any]:
    quick = raw.get("quick") or {}
    if not isinstance(quick, Mapping):
        issues.append("quick: must be a mapping")
        return dict(raw)
    out = dict(raw)
    for key, value in quick.items():
        if key in ("scaling", "slo") and isinstance(value, Mapping):
            out[key] = {**(raw.get(key) or {}), **value}
        elif key == "policies":
            issues.append("quick.policies: give each policy its own quick: section instead")
        else:
            out[key] = value
    policies = raw.get("policies")
    if isinstance(policies, list):
        out["policies"] = [
            {**p, **(p.get("quick") or {})} if isinstance(p, Mapping) else p for p in policies
        ]
    return out


def _parse_load(raw: object, issues: list[str]) -> RateProfile:
    points: list[tuple[float, float]] = []
    if not isinstance(raw, list) or len(raw) < 2:
        issues.append("load: a list of at least two [seconds, req/s] corners")
        return RateProfile(points=((0.0, 1.0), (1.0, 1.0)))
    for i, item in enumerate(raw):
        ok = (
            isinstance(item, list)
            and len(item) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in item)
        )
        if not ok:
            issues.append(f"load[{i}]: must be [seconds, req/s]")
            continue
        points.append((float(item[0]), float(item[1])))
    try:
        return RateProfile(points=tuple(points))
    except ValueError as exc:
        issues.append(f"load: {exc}")
        return RateProfile(points=((0.0, 1.0), (1.0, 1.0)))


def _parse_slo(raw: object, issues: list[str]) -> Slo:
    r = Fields(raw, "slo", issues, frozenset({"ttft_s", "window_s", "percentile"}))
    d = Slo()
    slo = Slo(
        ttft_s=r.positive("ttft_s", float, d.ttft_s),
        window_s=r.positive("window_s", float, d.window_s),
        percentile=r.positive("percentile", float, d.percentile),
    )
    if slo.percentile > 100:
        issues.append("slo.percentile: must be <= 100")
    return slo


def _parse_scaling(raw: object, issues: list[str]) -> Scaling:
    fields = frozenset(f.name for f in dataclasses.fields(Scaling))
    r = Fields(raw, "scaling", issues, fields)
    d = Scaling()
    scaling = Scaling(
        min_replicas=r.positive("min_replicas", int, d.min_replicas),
        max_replicas=r.positive("max_replicas", int, d.max_replicas),
        startup_s=r.positive("startup_s", float, d.startup_s, zero_ok=True),
        drain_grace_s=r.positive("drain_grace_s", float, d.drain_grace_s, zero_ok=True),
        drain_timeout_s=r.positive("drain_timeout_s", float, d.drain_timeout_s),
        tick_s=r.positive("tick_s", float, d.tick_s),
    )
    if scaling.min_replicas > scaling.max_replicas:
        issues.append("scaling: min_replicas must be <= max_replicas")
    return scaling


def _parse_policies(raw: object, issues: list[str]) -> tuple[Policy, ...]:
    if not isinstance(raw, list) or not raw:
        issues.append("policies: a non-empty list")
        return ()
    out: list[Policy] = []
    for i, item in enumerate(raw):
        r = Fields(item, f"policies[{i}]", issues, _POLICY_KEYS)
        kind_text = r.get("kind", str, "")
        if kind_text not in set(RuleKind):
            issues.append(f"policies[{i}].kind: one of {', '.join(RuleKind)}")
            continue
        metric_text = r.get("metric", str, str(UtilisationMetric.BUSY))
        if metric_text not in set(UtilisationMetric):
            issues.append(f"policies[{i}].metric: one of {', '.join(UtilisationMetric)}")
            continue
        d = Policy(name="-", kind=RuleKind.SLUICE)
        policy = Policy(
            name=check_name(r.get("name", str, ""), f"policies[{i}].name", issues),
            kind=RuleKind(kind_text),
            autoscaling=r.get("autoscaling", dict, None),
            metric=UtilisationMetric(metric_text),
            target=r.positive("target", float, d.target),
            tolerance=r.positive("tolerance", float, d.tolerance, zero_ok=True),
            sync_s=r.positive("sync_s", float, _default_sync_s(kind_text), zero_ok=True),
            metric_window_s=r.positive("metric_window_s", float, d.metric_window_s),
            stabilization_s=r.positive("stabilization_s", float, d.stabilization_s, zero_ok=True),
            scale_up_pods=r.positive("scale_up_pods", int, d.scale_up_pods),
            scale_up_percent=r.positive("scale_up_percent", float, d.scale_up_percent),
        )
        if policy.kind is RuleKind.UTILISATION and policy.autoscaling is not None:
            issues.append(f"policies[{i}].autoscaling: only for kind sluice")
        out.append(policy)
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        issues.append("policies: names must be unique")
    return tuple(out)


def _default_sync_s(kind: str) -> float:
    """An HPA syncs every 15 s (kube-controller-manager's default); the Sluice reconciler acts
    on every tick unless told to act like that HPA."""
    return HPA_SYNC_S if kind == RuleKind.UTILISATION else 0.0
