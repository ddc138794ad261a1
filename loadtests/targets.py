"""What the load is sent to: `sluice serve` on a generated config, an external command, or a URL.

Each target runs in its own process (never in the harness's event loop), bound to 127.0.0.1 on
ports picked free, and is stopped (SIGTERM, then SIGKILL) when its trial ends: only processes
started here are ever signalled. Readiness is polled with a bounded loop.
"""

import asyncio
import contextlib
import shlex
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from .fleet import Fleet
from .scenario import Policy, PolicyKind, Scenario

HOST = "127.0.0.1"
READY_POLL_S = 0.05
STOP_TIMEOUT_S = 10.0
GATEWAY_READY_TIMEOUT_S = 30.0


class TargetError(RuntimeError):
    """A target did not start; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def sluice_command() -> list[str]:
    exe = Path(sys.executable).with_name("sluice")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway"]


def gateway_config(
    scenario: Scenario, policy: Policy, fleet: Fleet, port: int
) -> list[dict[str, Any]]:
    """Gateway → HTTPRoute (/v1) → InferencePool with the policy's profile, plus the fleet's
    EndpointSlices labelled with the pool's selector, plus the scenario's extra resources and
    then the policy's own."""
    pool, ns = scenario.pool, {"namespace": "default"}
    spec: dict[str, Any] = {
        "targetRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                        "name": pool}],
        "profile": policy.sluice_profile,
        **policy.sluice_spec,
    }  # fmt: skip
    docs: list[dict[str, Any]] = [
        _doc("gateway.networking.k8s.io/v1", "GatewayClass", {"name": "sluice"},
             {"controllerName": "sluice.dev/gateway-controller"}),
        _doc("gateway.networking.k8s.io/v1", "Gateway", {"name": "loadtest", **ns},
             {"gatewayClassName": "sluice",
              "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}),
        _doc("gateway.networking.k8s.io/v1", "HTTPRoute", {"name": "llm", **ns},
             {"parentRefs": [{"name": "loadtest"}],
              "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}],
                         "backendRefs": [{"group": "inference.networking.k8s.io",
                                          "kind": "InferencePool", "name": pool}],
                         "timeouts": {"request": f"{scenario.request_timeout_s:g}s"}}]}),
        _doc("inference.networking.k8s.io/v1", "InferencePool", {"name": pool, **ns},
             {"selector": {"matchLabels": {"app": pool}}, "targetPorts": [{"number": 8000}]}),
        _doc("sluice.dev/v1alpha1", "InferencePoolPolicy", {"name": f"{pool}-policy", **ns},
             spec),
    ]  # fmt: skip
    extra = (*scenario.extra_config, *policy.extra_config)
    return [*docs, *fleet.endpoint_slices_yaml({"app": pool}), *map(dict, extra)]


def _doc(api: str, kind: str, meta: Mapping[str, str], spec: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": dict(meta), "spec": dict(spec)}


def target_url(policy: Policy, port: int) -> str:
    return policy.url if policy.kind is PolicyKind.URL else f"http://{HOST}:{port}"


@contextlib.asynccontextmanager
async def running_target(
    policy: Policy, scenario: Scenario, fleet: Fleet | None, port: int, logs: Path, tag: str
) -> AsyncIterator[int | None]:
    """Start the target for one trial on `port` (see `target_url`), wait until it is ready,
    yield its pid, and stop it afterwards. A URL policy is already running: yield None."""
    if policy.kind is PolicyKind.URL:
        yield None
        return
    if fleet is None:
        raise TargetError(f"{policy.name}: a {policy.kind} policy needs the fleet")
    if policy.kind is PolicyKind.SLUICE:
        config = logs / f"{tag}.config.yaml"
        docs = gateway_config(scenario, policy, fleet, port)
        config.write_text(yaml.safe_dump_all(docs, sort_keys=False), encoding="utf-8")
        admin = free_port()
        exe = [policy.sluice_bin] if policy.sluice_bin else None
        cmd = sluice_serve(config, admin, exe=exe)
        ready_url, timeout_s = f"http://{HOST}:{admin}/readyz", GATEWAY_READY_TIMEOUT_S
    else:
        urls = [r.url for r in fleet.replicas]
        cmd = shlex.split(
            policy.command.format(
                port=port,
                worker_urls=",".join(urls),
                worker_urls_space=" ".join(urls),
                model=fleet.spec.replicas[0].model,
                aux_port=free_port(),
            )
        )
        ready_url, timeout_s = f"http://{HOST}:{port}{policy.ready_path}", policy.ready_timeout_s
    async with running_process(cmd, logs / f"{tag}.log", ready_url, timeout_s) as proc:
        yield proc.pid


def sluice_serve(
    config: Path, admin_port: int, *, log_level: str = "warning", exe: Sequence[str] | None = None
) -> list[str]:
    """The command line of `sluice serve` on `config` on loopback, without a file watch."""
    return [*(exe or sluice_command()), "serve", "--config", str(config), "--address", HOST,
            "--admin", f"{HOST}:{admin_port}", "--no-watch", "--log-level", log_level]  # fmt: skip


@contextlib.asynccontextmanager
async def running_process(
    cmd: Sequence[str], log_path: Path, ready_url: str, timeout_s: float
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`cmd` with its output in `log_path`, yielded once `ready_url` answers 200 (TargetError
    if it exits first or takes longer than `timeout_s`); stopped on the way out."""
    async with _process(cmd, log_path) as proc:
        await _wait_ready(proc, ready_url, timeout_s, log_path)
        yield proc


@contextlib.asynccontextmanager
async def _process(cmd: Sequence[str], log_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    with log_path.open("wb") as log:
        log.write(f"$ {shlex.join(cmd)}\n".encode())
        log.flush()
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        except OSError as exc:
            raise TargetError(f"cannot start {cmd[0]}: {exc}") from exc
    try:
        yield proc
    finally:
        await stop_process(proc)


async def stop_process(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after a grace period; only ever a process started here."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(STOP_TIMEOUT_S):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def _wait_ready(
    proc: asyncio.subprocess.Process, url: str, timeout_s: float, log_path: Path
) -> None:
    deadline = time.monotonic() + timeout_s
    timeout = aiohttp.ClientTimeout(total=1.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise TargetError(f"exited with {proc.returncode}:\n{log_tail(log_path)}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(READY_POLL_S)
    raise TargetError(f"not ready at {url} after {timeout_s:g} s:\n{log_tail(log_path)}")


def log_tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join(text[-lines:])
