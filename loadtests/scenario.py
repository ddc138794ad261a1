"""Load-test scenarios: frozen dataclasses and the one strict parser from the YAML form.

Decides what a scenario means (fleet, workload, load points, compared policies, durations) and
rejects a bad one with every issue and its path, before anything starts. Never touches sockets,
processes or clocks. The format is documented in `loadtests/scenarios/README.md`.
"""

import dataclasses
import enum
import ipaddress
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from loadtests.fields import Fields

from .fleet import FleetSpec, SpecError

DEFAULT_POOL = "llama"
# A name is used in file names and table rows: keep it to a safe alphabet.
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


class ScenarioError(ValueError):
    """A scenario is invalid; `issues` lists every problem with its path. Each kind of
    scenario (load test, closed loop, rollout) raises its own subclass, with its own code."""

    code = "scenario_invalid"

    def __init__(self, issues: Sequence[str]) -> None:
        self.issues = tuple(issues)
        super().__init__("; ".join(self.issues))


class PromptShape(enum.StrEnum):
    SHARED_PREFIX = "shared-prefix"  # G groups of long system prompts + a unique question
    RANDOM = "random"  # a unique prompt per request: no prefix-cache hits


class Api(enum.StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"


class PolicyKind(enum.StrEnum):
    SLUICE = "sluice"  # `sluice serve` with an InferencePoolPolicy profile
    COMMAND = "command"  # any command serving OpenAI on {port} in front of {worker_urls}
    URL = "url"  # an OpenAI URL already running (no fleet is started for it)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Weighted:
    name: str
    weight: float = 1.0
    stream: bool | None = None  # objectives only: this class's `stream`, else the workload's


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    """What each request looks like. `models` empty: the fleet's first model (or `model`)."""

    kind: PromptShape = PromptShape.SHARED_PREFIX
    api: Api = Api.CHAT
    groups: int = 16
    system_prompt_tokens: int = 1000
    question_tokens: int = 50
    prompt_tokens: int = 500  # kind random
    max_tokens: int = 100
    stream: bool = True
    ignore_eos: bool = False
    models: tuple[Weighted, ...] = ()  # weighted model names: A/B variants or LoRA adapters
    objectives: tuple[Weighted, ...] = ()  # x-gateway-inference-objective values
    tenants: int = 0  # > 0: x-gateway-inference-fairness-id tenant-0 .. tenant-(N-1)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    name: str
    kind: PolicyKind
    sluice_profile: str | Mapping[str, Any] = "default"
    sluice_spec: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # another Sluice build's `sluice` script to run this policy with (default: this one's),
    # to compare two versions side by side in one run
    sluice_bin: str = ""
    # this policy's own extra gateway resources, after the scenario's gateway.extra_config
    # (e.g. one TrafficPolicy setting against another)
    extra_config: tuple[Mapping[str, Any], ...] = ()
    command: str = ""
    url: str = ""
    ready_path: str = "/health"
    ready_timeout_s: float = 30.0


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LoadPoint:
    label: str  # "0.6x" of capacity, or "12 rps"
    qps: float


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    name: str
    description: str
    fleet: FleetSpec
    workload: Workload
    raw_workload: Mapping[str, Any]  # handed to the load generator process as is
    capacity_rps: float | None
    points: tuple[LoadPoint, ...]
    policies: tuple[Policy, ...]
    duration_s: float
    warmup_s: float
    drain_s: float
    request_timeout_s: float
    seed: int
    generator_processes: int
    max_in_flight: int
    pool: str
    extra_config: tuple[Mapping[str, Any], ...]


_TOP_KEYS = {
    *("name", "description", "fleet", "workload", "capacity_rps", "load", "qps"),
    *("duration_s", "warmup_s", "drain_s", "request_timeout_s", "seed", "policies"),
    *("generator_processes", "max_in_flight", "gateway", "quick"),
}
QUICK_DEFAULTS: Mapping[str, float] = {"warmup_s": 1.0, "duration_s": 5.0, "drain_s": 5.0}


def parse_scenario(raw: object, *, quick: bool = False) -> Scenario:
    """Build a scenario from its YAML form; raises `ScenarioError` listing every issue.

    `quick` shrinks warm-up, duration and drain (to the `quick:` section, else QUICK_DEFAULTS).
    """
    issues: list[str] = []
    top = Fields(raw, "", issues, _TOP_KEYS)
    fleet = parse_fleet(top.raw.get("fleet", {}), issues)
    raw_workload = top.get("workload", dict, {})
    workload = parse_workload(raw_workload, "workload", issues)
    capacity = top.raw.get("capacity_rps")
    times = _times(top, quick, issues)
    gateway = Fields(top.raw.get("gateway", {}), "gateway", issues, {"pool", "extra_config"})
    extra = gateway.get("extra_config", list, [])
    if not all(isinstance(doc, Mapping) for doc in extra):
        issues.append("gateway.extra_config: must be a list of Kubernetes resources (mappings)")
    scenario = Scenario(
        name=check_name(top.get("name", str, ""), "name", issues),
        description=top.get("description", str, ""),
        fleet=fleet,
        workload=workload,
        raw_workload=raw_workload,
        capacity_rps=top.positive("capacity_rps", float, 1.0) if capacity is not None else None,
        points=_points(top, issues),
        policies=_policies(top.raw.get("policies"), issues),
        seed=top.get("seed", int, 0),
        generator_processes=top.positive("generator_processes", int, 1),
        max_in_flight=top.positive("max_in_flight", int, 2048),
        pool=check_name(gateway.get("pool", str, DEFAULT_POOL), "gateway.pool", issues),
        extra_config=tuple(extra),
        **times,
    )
    if issues:
        raise ScenarioError(issues)
    return scenario


def _times(top: Fields, quick: bool, issues: list[str]) -> dict[str, float]:
    times = {
        "duration_s": top.positive("duration_s", float, 30.0),
        "warmup_s": top.positive("warmup_s", float, 5.0, zero_ok=True),
        "drain_s": top.positive("drain_s", float, 10.0, zero_ok=True),
        "request_timeout_s": top.positive("request_timeout_s", float, 120.0),
    }
    shrink = Fields(top.raw.get("quick", {}), "quick", issues, set(QUICK_DEFAULTS))
    if quick:
        for key, default in QUICK_DEFAULTS.items():
            times[key] = min(times[key], shrink.positive(key, float, default, zero_ok=True))
    return times


def parse_fleet(raw: object, issues: list[str]) -> FleetSpec:
    """A scenario's `fleet:` section (the FleetSpec.from_dict form); its issues under `fleet.`."""
    if not isinstance(raw, Mapping):
        issues.append("fleet: must be a mapping (the FleetSpec.from_dict form)")
        return FleetSpec()
    try:
        return FleetSpec.from_dict(raw)
    except SpecError as exc:
        issues.extend(f"fleet.{issue}" for issue in exc.issues)
        return FleetSpec()


def check_name(value: str, path: str, issues: list[str]) -> str:
    """A name used in file names and table rows: letters, digits, '-', '_' and '.' only."""
    if not value or not set(value.lower()) <= _NAME_CHARS:
        issues.append(f"{path}: required, letters, digits, '-', '_' and '.' only")
    return value


def parse_workload(raw: object, path: str, issues: list[str]) -> Workload:
    """The `workload:` section (also read by the load generator process and the locustfile)."""
    fields = {f.name for f in dataclasses.fields(Workload)}
    r = Fields(raw, path, issues, fields)
    d = Workload()
    shape = r.choice("kind", PromptShape, d.kind)
    workload = Workload(
        kind=shape,
        api=r.choice("api", Api, d.api),
        groups=r.positive("groups", int, d.groups),
        system_prompt_tokens=r.positive("system_prompt_tokens", int, d.system_prompt_tokens),
        question_tokens=r.positive("question_tokens", int, d.question_tokens),
        prompt_tokens=r.positive("prompt_tokens", int, d.prompt_tokens),
        max_tokens=r.positive("max_tokens", int, d.max_tokens),
        stream=r.get("stream", bool, d.stream),
        ignore_eos=r.get("ignore_eos", bool, d.ignore_eos),
        models=_weighted(r, "models", issues),
        objectives=_weighted(r, "objectives", issues, streams=True),
        tenants=r.positive("tenants", int, d.tenants, zero_ok=True),
    )
    return workload


def _weighted(
    r: Fields, key: str, issues: list[str], *, streams: bool = False
) -> tuple[Weighted, ...]:
    """`[a, b]` or `[{name: a, weight: 3}, ...]`; with ``streams``, an entry may also say
    `stream: false` (that class of requests is not streamed whatever the workload says)."""
    out: list[Weighted] = []
    for i, item in enumerate(r.get(key, list, [])):
        path = f"{r.sub(key)}[{i}]"
        if isinstance(item, str) and item:
            out.append(Weighted(name=item))
            continue
        entry = Fields(
            item, path, issues, {"name", "weight", "stream"} if streams else {"name", "weight"}
        )
        name = entry.get("name", str, "")
        weight = entry.positive("weight", float, 1.0)
        stream = entry.get("stream", bool, None)
        if not name:
            issues.append(f"{path}.name: required")
        out.append(Weighted(name=name, weight=weight, stream=stream))
    return tuple(out)


def _points(top: Fields, issues: list[str]) -> tuple[LoadPoint, ...]:
    load, qps = top.raw.get("load"), top.raw.get("qps")
    if (load is None) == (qps is None):
        issues.append("load / qps: give exactly one (fractions of capacity_rps, or absolute)")
        return ()
    values = load if load is not None else qps
    key = "load" if load is not None else "qps"
    if not isinstance(values, list) or not values:
        issues.append(f"{key}: must be a non-empty list of numbers")
        return ()
    ok = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool) and v > 0]
    if len(ok) != len(values):
        issues.append(f"{key}: every entry must be a number > 0")
        return ()
    if qps is not None:
        return tuple(LoadPoint(label=f"{v:g} rps", qps=float(v)) for v in ok)
    capacity = top.raw.get("capacity_rps")
    if not isinstance(capacity, int | float) or isinstance(capacity, bool) or capacity <= 0:
        issues.append("capacity_rps: required (> 0) when load is given as fractions")
        return ()
    return tuple(LoadPoint(label=f"{v:g}x", qps=float(v) * capacity) for v in ok)


_POLICY_KEYS = {
    *("name", "sluice_profile", "sluice_spec", "command", "url", "ready_path"),
    *("ready_timeout_s", "sluice_bin", "extra_config"),
}


def _policies(raw: object, issues: list[str]) -> tuple[Policy, ...]:
    if not isinstance(raw, list) or not raw:
        issues.append("policies: must be a non-empty list")
        return ()
    policies = tuple(_policy(item, f"policies[{i}]", issues) for i, item in enumerate(raw))
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        issues.append("policies: names must be unique")
    return policies


def _policy(raw: object, path: str, issues: list[str]) -> Policy:
    r = Fields(raw, path, issues, _POLICY_KEYS)
    name = check_name(r.get("name", str, ""), f"{path}.name", issues)
    command, url = r.get("command", str, ""), r.get("url", str, "")
    profile = r.raw.get("sluice_profile", "default")
    if not isinstance(profile, str | Mapping):
        issues.append(f"{path}.sluice_profile: a profile name or a profile mapping")
    chosen = [k for k in ("command", "url") if r.raw.get(k)]
    chosen += ["sluice_profile"] if "sluice_profile" in r.raw or "sluice_spec" in r.raw else []
    if len(chosen) > 1:
        issues.append(f"{path}: give one of sluice_profile, command, url (got {chosen})")
    if url and not is_loopback_url(url):
        issues.append(f"{path}.url: must be http:// on a loopback address (127.0.0.1, ::1)")
    if command and "{port}" not in command:
        issues.append(f"{path}.command: must contain {{port}} (the port to serve on)")
    kind = PolicyKind.COMMAND if command else PolicyKind.URL if url else PolicyKind.SLUICE
    sluice_bin = r.get("sluice_bin", str, "")
    if sluice_bin and kind is not PolicyKind.SLUICE:
        issues.append(f"{path}.sluice_bin: only for a Sluice policy (sluice_profile)")
    elif sluice_bin and not os.access(sluice_bin, os.X_OK):
        issues.append(f"{path}.sluice_bin: {sluice_bin} is not an executable file")
    extra = r.raw.get("extra_config")
    if extra is not None and (
        kind is not PolicyKind.SLUICE
        or not isinstance(extra, list)
        or not all(isinstance(d, Mapping) for d in extra)
    ):
        issues.append(
            f"{path}.extra_config: a list of Kubernetes resources (mappings), for a Sluice policy"
        )
        extra = ()
    return Policy(
        name=name,
        kind=kind,
        sluice_profile=profile if isinstance(profile, str | Mapping) else "default",
        sluice_spec=r.get("sluice_spec", dict, {}),
        sluice_bin=sluice_bin,
        extra_config=tuple(extra or ()),
        command=command,
        url=url.rstrip("/"),
        ready_path=r.get("ready_path", str, "/health"),
        ready_timeout_s=r.positive("ready_timeout_s", float, 30.0),
    )


def is_loopback_url(url: str) -> bool:
    """Load goes to this machine only: http:// on 127.0.0.0/8, ::1 or localhost."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return parts.scheme == "http" and loopback
