"""`sluice fleet`: run a simulated model-server fleet until SIGINT/SIGTERM.

Prints one line per replica (name, engine, model, accelerator, URL). Either describe the fleet
with flags (every replica alike except for `--accelerators`, which are assigned round-robin) or
with `--spec FILE.yaml` (see `FleetSpec.from_dict`); `--host`, `--base-port`, `--seed` and
`--time-scale` apply to both. `--endpoint-slices FILE` also writes the fleet as EndpointSlices.
"""

import argparse
import asyncio
import dataclasses
import signal
import sys
from collections.abc import Callable
from typing import Any

import yaml

from .fleet import Fleet
from .spec import DEFAULT_MODEL, Engine, FleetSpec, ReplicaSpec, SpecError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=4, help="number of replicas (4)")
    parser.add_argument("--engine", choices=[str(e) for e in Engine], default="vllm")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--adapters", default="", help="LoRA adapters, comma-separated")
    parser.add_argument("--max-loras", type=int, default=1)
    parser.add_argument("--accelerators", default="a100", help="e.g. a100,h100,l4 (round-robin)")
    parser.add_argument("--spec", help="fleet spec YAML; replaces the replica flags above")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--base-port", type=int, default=0, help="replica i on P+i; 0: ephemeral")
    parser.add_argument("--seed", type=int, default=None, help="output seed (0)")
    parser.add_argument("--time-scale", type=float, default=None, help="duration multiplier (1)")
    parser.add_argument("--endpoint-slices", metavar="FILE", help="write EndpointSlice YAML")
    parser.add_argument(
        "--labels", default="", help="labels for the EndpointSlices, k=v,... (e.g. app=llama)"
    )
    return parser


def build_spec(args: argparse.Namespace) -> FleetSpec:
    """The fleet the parsed arguments describe; raises SpecError."""
    if args.spec:
        with open(args.spec, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
        spec = FleetSpec.from_dict(raw)
    else:
        accelerators = [a for a in args.accelerators.split(",") if a] or ["a100"]
        adapters = tuple(a for a in args.adapters.split(",") if a)
        spec = FleetSpec(
            replicas=tuple(
                ReplicaSpec(
                    model=args.model,
                    engine=Engine(args.engine),
                    adapters=adapters,
                    max_loras=args.max_loras,
                    accelerator=accelerators[i % len(accelerators)],
                )
                for i in range(args.replicas)
            )
        )
    replicas = spec.replicas
    if args.base_port:
        replicas = tuple(
            r if r.port else dataclasses.replace(r, port=args.base_port + i)
            for i, r in enumerate(replicas)
        )
    overrides = {"seed": args.seed, "time_scale": args.time_scale}
    return dataclasses.replace(
        spec, replicas=replicas, **{k: v for k, v in overrides.items() if v is not None}
    )


def _labels(text: str) -> dict[str, str]:
    pairs = (item.split("=", 1) for item in text.split(",") if item)
    return {k.strip(): v.strip() for k, v in pairs}


def _write_yaml(path: str, docs: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump_all(docs, f, sort_keys=False)


async def _serve(spec: FleetSpec, args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Fleet(spec, host=args.host) as fleet:
        for r in fleet.replicas:
            print(f"{r.name}\t{r.spec.engine}\t{r.spec.model}\t{r.spec.accelerator}\t{r.url}")
        if args.endpoint_slices:
            docs = fleet.endpoint_slices_yaml(_labels(args.labels))
            _write_yaml(args.endpoint_slices, docs)  # once, at start-up: blocking is fine
            print(f"EndpointSlices written to {args.endpoint_slices}")
        print('fault injection: POST <url>/fleet/fault {"mode": "crash", "duration_s": 10}')
        sys.stdout.flush()
        await stop.wait()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    """Run the fleet until SIGINT/SIGTERM: 0; 2 for an invalid description, 1 if it cannot
    start (e.g. a port in use)."""
    args = _parser().parse_args(argv)
    try:
        spec = build_spec(args)
    except (SpecError, ValueError, OSError, yaml.YAMLError) as exc:
        print(f"sluice fleet: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(spec, args))
    except KeyboardInterrupt:  # before the signal handlers were installed
        return 0
    except (OSError, ValueError) as exc:  # a port in use, duplicate names or ports
        print(f"sluice fleet: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
