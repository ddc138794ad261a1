"""The gateway config of one run: one HTTPRoute rule whose two backendRefs are InferencePools
(the baseline `llama-v1`, the candidate `llama-v2`, each over its own simulated fleet), and a
Rollout driving that rule with the scenario's steps and analysis.

Both pools get one InferencePoolPolicy: scrapes every 250 ms, 2 s staleness, FailOpen. The
defaults (50 ms, 0.5 s, FailClose) are for real model servers; here the fleet, the gateway and
the generator share a small machine, and a CPU stall of the fleet's process would otherwise turn
into gateway 503s (no fresh metrics) that this scenario does not set out to measure.

The config is checked with the gateway's own loader before `sluice serve` starts: a Rollout
that does not bind to its rule is only a warning to the gateway (it stays inert), so that
warning is an error here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from gateway.configload import load_config
from loadtests.fleet import Fleet
from routing.errors import ConfigError

from .spec import RolloutScenario

NAMESPACE = "default"
BASELINE = "llama-v1"
CANDIDATE = "llama-v2"
ROUTE = "llm"
RULE = "chat"
ROLLOUT = "llama-v2"
ROLLOUT_KEY = f"{NAMESPACE}/{ROLLOUT}"
POOL_GROUP = "inference.networking.k8s.io"
GATEWAY_GROUP = "gateway.networking.k8s.io"


class ConfigCheckError(RuntimeError):
    """The generated config does not load, or its Rollout would be inert."""


def _doc(api: str, kind: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    meta = {"name": name} if kind == "GatewayClass" else {"name": name, "namespace": NAMESPACE}
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": dict(spec)}


def _pool_ref(name: str, weight: int) -> dict[str, Any]:
    return {"group": POOL_GROUP, "kind": "InferencePool", "name": name, "weight": weight}


def gateway_docs(
    scenario: RolloutScenario, port: int, fleets: Mapping[str, Fleet]
) -> list[dict[str, Any]]:
    """Every resource of the run's config; `fleets` maps a variant name to its fleet."""
    gw = f"{GATEWAY_GROUP}/v1"
    listener = {"name": "http", "port": port, "protocol": "HTTP"}
    rule = {
        "name": RULE,
        "matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
        "backendRefs": [_pool_ref(BASELINE, 100), _pool_ref(CANDIDATE, 0)],
        "timeouts": {"request": f"{scenario.request_timeout_s:g}s"},
    }
    rollout = {
        "targetRef": {"group": GATEWAY_GROUP, "kind": "HTTPRoute", "name": ROUTE},
        "ruleName": RULE,
        "baseline": BASELINE,
        "candidate": CANDIDATE,
        "sticky": {"header": scenario.load.user_header},
        "override": {"header": "x-sluice-variant"},
        **scenario.rollout,
    }
    docs = [
        _doc(gw, "GatewayClass", "sluice", {"controllerName": "sluice.dev/gateway-controller"}),
        _doc(gw, "Gateway", "gw", {"gatewayClassName": "sluice", "listeners": [listener]}),
        _doc(gw, "HTTPRoute", ROUTE, {"parentRefs": [{"name": "gw"}], "rules": [rule]}),
        _doc("sluice.dev/v1alpha1", "Rollout", ROLLOUT, rollout),
    ]
    policy = {
        "targetRefs": [{"group": POOL_GROUP, "kind": "InferencePool", "name": n} for n in fleets],
        "scrape": {"interval": "250ms", "staleness": "2s"},
        "failureMode": "FailOpen",
    }
    docs.append(_doc("sluice.dev/v1alpha1", "InferencePoolPolicy", "rollout-pools", policy))
    for name, fleet in fleets.items():
        pool = {"selector": {"matchLabels": {"app": name}}, "targetPorts": [{"number": 8000}]}
        docs.append(_doc(f"{POOL_GROUP}/v1", "InferencePool", name, pool))
        docs.extend(fleet.endpoint_slices_yaml({"app": name}, name_prefix=name))
    return docs


def write_checked(path: Path, docs: list[dict[str, Any]]) -> None:
    """Write the config and load it as `sluice serve` will; ConfigCheckError if it fails or
    any warning names the Rollout (an unbound Rollout is inert)."""
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
    try:
        loaded = load_config([str(path)])
    except ConfigError as exc:
        raise ConfigCheckError(f"the generated config does not load: {exc}") from exc
    inert = [str(w) for w in loaded.warnings if "rollout" in str(w).lower()]
    if inert or ROLLOUT_KEY not in {s.meta.key for s in loaded.table.rollouts.values()}:
        raise ConfigCheckError(f"the Rollout would not drive the rule: {inert}")
