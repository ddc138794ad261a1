"""The ``sluice`` command line: serve, check, demo, fleet, loadtest.

The only module that configures logging, picks the event loop and calls ``sys.exit``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.configload import load_config
from routing.errors import ConfigError

if TYPE_CHECKING:
    from gateway.kube import ClusterSource

__all__ = ["main"]

DEFAULT_ADMIN = "127.0.0.1:9901"


def _split_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def _add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config", action="append", default=None,
        help="config file or folder (repeatable)",
    )  # fmt: skip
    p.add_argument(
        "--kubernetes", action="store_true",
        help="also read the resources from this pod's cluster (service account) and follow them",
    )  # fmt: skip
    p.add_argument(
        "--kubernetes-api", default="", metavar="URL",
        help="read the resources from this API server instead, e.g. http://127.0.0.1:8001 "
        "(kubectl proxy)",
    )  # fmt: skip
    p.add_argument(
        "--kubernetes-token-file", default=None, help="bearer token for --kubernetes-api"
    )
    p.add_argument(
        "--namespace", default=None,
        help="with --kubernetes: read namespaced resources of this namespace only",
    )  # fmt: skip
    p.add_argument(
        "--kubeconfig", default="", metavar="PATH",
        help="read the cluster a kubeconfig's context names (outside a cluster)",
    )  # fmt: skip
    p.add_argument("--context", default=None, help="with --kubeconfig: this context")
    p.add_argument(
        "--no-status", action="store_true",
        help="with --kubernetes: write no status (conditions) back to the API",
    )  # fmt: skip
    p.add_argument("--address", default="0.0.0.0", help="address the listeners bind")
    p.add_argument("--admin", default=DEFAULT_ADMIN, help="admin listener host:port")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--no-watch", action="store_true", help="reload on SIGHUP only")
    p.add_argument(
        "--keda", default="", metavar="HOST:PORT",
        help="serve the KEDA external scaler (gRPC) here, e.g. 0.0.0.0:9902; off by default",
    )  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Sluice inference gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve_args(sub.add_parser("serve", help="serve the Gateways in the config"))
    check = sub.add_parser("check", help="validate config files")
    check.add_argument("--config", action="append", required=True)
    demo = sub.add_parser("demo", help="simulated fleet + gateway on the quickstart config")
    demo.add_argument("--admin", default=DEFAULT_ADMIN)
    demo.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub.add_parser("fleet", help="the simulated model-server fleet", add_help=False)
    sub.add_parser("loadtest", help="run a load-test scenario", add_help=False)
    return parser


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _run(coro: object) -> None:
    try:
        import uvloop

        uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        asyncio.run(coro)  # type: ignore[arg-type]


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue)
        errors = sum(1 for i in exc.issues if i.severity == "error")
        print(f"{errors} error(s) in {', '.join(args.config)}")
        return 1
    for issue in loaded.warnings:
        print(issue)
    print(f"ok: {len(loaded.files)} file(s), {len(loaded.table.ports)} listener port(s)")
    return 0


def _cluster(args: argparse.Namespace) -> ClusterSource | None:
    from gateway.kube import ClusterSource
    from gateway.kubeapi import ApiServer

    if args.kubeconfig:
        from gateway.kubeconfig import from_kubeconfig

        api = from_kubeconfig(args.kubeconfig, args.context)
        if args.namespace:
            api = dataclasses.replace(api, namespace=args.namespace)
    elif args.kubernetes_api:
        api = ApiServer(
            url=args.kubernetes_api,
            token_file=args.kubernetes_token_file,
            namespace=args.namespace or "default",  # where the status writer's Lease lives
        )
    elif args.kubernetes:
        api = ApiServer.in_cluster()
    else:
        return None
    return ClusterSource(api, namespace=args.namespace)


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway.app import running_gateway, serve_forever
    from gateway.kubeapi import KubeError

    _configure_logging(args.log_level)
    try:
        cluster = _cluster(args)
    except KubeError as exc:
        print(f"sluice: kubernetes: {exc}", file=sys.stderr)
        return 2
    paths = args.config or []
    if not paths and cluster is None:
        print("sluice serve: --config, --kubernetes or --kubeconfig is required", file=sys.stderr)
        return 2
    loaded = None
    if cluster is None:  # with a cluster, the first load waits for its objects
        try:
            loaded = load_config(paths)
        except ConfigError as exc:
            for issue in exc.issues:
                print(issue, file=sys.stderr)
            return 1
    admin_host, admin_port = _split_hostport(args.admin)

    async def run() -> None:
        async with running_gateway(
            paths,
            address=args.address,
            admin_address=admin_host,
            admin_port=admin_port,
            watch_interval_s=None if args.no_watch or not paths else 1.0,
            loaded=loaded,
            keda_address=args.keda or None,
            cluster=cluster,
            write_status=not args.no_status,
        ) as gw:
            logging.getLogger("sluice").info("admin on http://%s:%d", admin_host, gw.admin_port)
            await serve_forever(gw)

    try:
        _run(run())
    except ConfigError as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sluice: cannot listen: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "fleet":
        from loadtests.fleet.cli import main as fleet_main

        sys.exit(fleet_main(argv[1:]))
    if argv and argv[0] == "loadtest":
        from loadtests.cli import main as loadtest_main

        sys.exit(loadtest_main(argv[1:]))
    args = _parser().parse_args(argv)
    if args.command == "check":
        sys.exit(_cmd_check(args))
    if args.command == "serve":
        sys.exit(_cmd_serve(args))
    if args.command == "demo":
        from gateway.demo import run_demo

        _configure_logging(args.log_level)
        sys.exit(run_demo(admin=_split_hostport(args.admin)))
    sys.exit(2)


if __name__ == "__main__":
    main()
