"""``sluice demo``: the embedded default. Starts the simulated fleet of
``loadtests/fleet/quickstart.yaml`` and the gateway on ``config/examples/quickstart.yaml``
in one process, prints where to send requests, and runs until Ctrl-C."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import yaml

from gateway.app import running_gateway, serve_forever
from routing.errors import ConfigError

__all__ = ["EXAMPLES", "run_demo"]

EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "examples"
QUICKSTART = EXAMPLES / "quickstart.yaml"
# the fleet spec lives with the fleet: config/ holds only Kubernetes resources (sluice check)
FLEET = Path(__file__).resolve().parent.parent / "loadtests" / "fleet" / "quickstart.yaml"


def run_demo(*, admin: tuple[str, int]) -> int:
    try:
        import uvloop

        uvloop.run(_demo(admin))
    except ImportError:
        asyncio.run(_demo(admin))
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sluice demo: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


async def _demo(admin: tuple[str, int]) -> None:
    from loadtests.fleet import Fleet, FleetSpec

    spec = FleetSpec.from_dict(yaml.safe_load(FLEET.read_text()))
    async with (
        Fleet(spec) as fleet,
        running_gateway(
            [str(QUICKSTART)], address="127.0.0.1", admin_address=admin[0], admin_port=admin[1]
        ) as gw,
    ):
        model = spec.replicas[0].model
        port = min(gw.ctx.holder.table.ports)
        print(f"\nSluice demo: {len(fleet.replicas)} simulated vLLM replicas behind the gateway.")
        print(f"  gateway  http://127.0.0.1:{port}    admin http://{admin[0]}:{gw.admin_port}")
        print("  try:")
        print(
            f"    curl -s http://127.0.0.1:{port}/v1/chat/completions "
            "-H 'Content-Type: application/json' \\\n"
            f'      -d \'{{"model": "{model}", '
            '"messages": [{"role": "user", "content": "Hello!"}]}\''
        )
        print(f"    curl -s http://{admin[0]}:{gw.admin_port}/metrics | grep sluice_")
        print("  Ctrl-C to stop.\n", flush=True)
        await serve_forever(gw)
