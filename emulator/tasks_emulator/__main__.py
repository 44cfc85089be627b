"""Command line: ``tasks-emulator [--host H] [--port P] [--rest-port R] [--keys-port K]
[--queue NAME] [--config FILE] [--metadata EMAIL=PORT] [--local-principal MEMBER]
[--data-dir DIR | --in-memory] [--reset]`` (or ``python -m tasks_emulator``). Prints one
ready line, stops cleanly on SIGTERM or Ctrl-C. State is kept in ``--data-dir`` (default:
``store.default_data_dir()``) unless ``--in-memory``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .config import ConfigError, StartConfig, load_config
from .loop import run
from .metadata import project_of
from .server import Emulator
from .store import StoreError, WriteFailed, default_data_dir


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tasks-emulator",
        description="A local Cloud Tasks (the google.cloud.tasks.v2 API over gRPC and REST) "
        "for development and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8123, help="gRPC port (0: any free port)")
    parser.add_argument(
        "--keys-port", type=int, default=8124, help="port of the OIDC keys (0: any free port)"
    )
    parser.add_argument(
        "--rest-port", type=int, default=8125, help="REST (HTTP/1.1 + JSON) port (0: any free port)"
    )
    parser.add_argument(
        "--metadata",
        action="append",
        default=[],
        type=_metadata_option,
        metavar="EMAIL=PORT",
        help="serve a GCE-style metadata server for service account EMAIL on PORT (0: any "
        "free port), as Cloud Run gives each service; point GCE_METADATA_HOST at it (repeatable)",
    )
    parser.add_argument(
        "--local-principal",
        default="owner",
        metavar="MEMBER",
        help="who a call without an access token is once IAM policies exist: 'owner' (every "
        "permission, the default) or an IAM member such as user:dev@example.com",
    )
    parser.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="NAME",
        help="create queue projects/P/locations/L/queues/Q with the API's defaults (repeatable)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help='queues to create (or update) at start, as JSON: {"queues": [Queue, ...]}, '
        "each Queue as the REST API writes it (name, rateLimits, retryConfig, state)",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--data-dir",
        metavar="DIR",
        help="keep queues, tasks, name tombstones and the OIDC signing key in an SQLite "
        f"database in DIR, so a restart or a crash loses nothing (default: {default_data_dir()})",
    )
    where.add_argument(
        "--in-memory",
        action="store_true",
        help="keep the state in memory only: every start begins empty",
    )
    parser.add_argument(
        "--reset",
        action="store_true",
        help="wipe the data directory's database before starting (it is never wiped otherwise)",
    )
    parser.add_argument(
        "--task-name-reuse-seconds",
        type=float,
        default=3600.0,
        help="how long a finished or deleted task's name stays taken (default 1 hour)",
    )
    parser.add_argument(
        "--queue-name-reuse-seconds",
        type=float,
        default=7 * 24 * 3600.0,
        help="how long a deleted queue's name stays taken (default 7 days)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="info logs every attempt; warning is quiet",
    )
    args = parser.parse_args(argv)
    if args.reset and args.in_memory:
        parser.error("--reset wipes a data directory; --in-memory has none")
    if not args.in_memory and args.data_dir is None:
        args.data_dir = str(default_data_dir())
    for name in ("port", "keys_port", "rest_port"):
        if not 0 <= getattr(args, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be 0-65535")
    return args


def _metadata_option(value: str) -> tuple[str, int]:
    email, _, port = value.rpartition("=")
    try:
        project_of(email)
        number = int(port)
    except ValueError as error:
        detail = str(error) if email else "no EMAIL="
        raise argparse.ArgumentTypeError(
            f"{value!r}: must be EMAIL=PORT, EMAIL a service account "
            f"(NAME@PROJECT_ID.iam.gserviceaccount.com), PORT 0-65535 ({detail})"
        ) from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: PORT must be 0-65535")
    return email, number


async def serve(args: argparse.Namespace) -> int:
    try:
        start = load_config(args.config) if args.config else StartConfig()
        start = start.with_queues(args.queue)
    except ConfigError as error:
        print(f"tasks_emulator: {error}", file=sys.stderr)
        return 2
    try:
        emulator = _emulator(args)
    except (ValueError, StoreError) as error:
        print(f"tasks_emulator: {error}", file=sys.stderr)
        return 2
    try:
        await emulator.start()
    except OSError as error:
        print(f"tasks_emulator: {error}", file=sys.stderr)
        return 1
    try:
        names = start.apply(emulator)
    except ConfigError as error:
        print(f"tasks_emulator: {error}", file=sys.stderr)
        await emulator.stop()
        return 2
    try:
        await emulator.durable()  # the configuration's queues are on disk before "ready"
    except WriteFailed as error:
        print(f"tasks_emulator: {error}", file=sys.stderr)
        await emulator.stop()
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(ready_line(emulator, names), flush=True)
    return await _run_until_stopped(emulator, stop)


def ready_line(emulator: Emulator, queues: list[str]) -> str:
    """The one line that says where everything is."""
    parts = [
        f"gRPC {emulator.address}",
        f"REST {emulator.rest_url}",
        f"OIDC certs {emulator.certs_url}",
    ]
    parts += [
        f"metadata {email} {emulator.metadata_host(email)}" for email in emulator.metadata_ports
    ]
    parts += [f"queue {name}" for name in queues]
    parts.append(f"state {emulator.store.location}")
    return "tasks_emulator ready: " + ", ".join(parts)


def _emulator(args: argparse.Namespace) -> Emulator:
    return Emulator(
        args.host,
        args.port,
        args.keys_port,
        rest_port=args.rest_port,
        metadata=dict(args.metadata),
        local_principal=args.local_principal,
        task_name_reuse_seconds=args.task_name_reuse_seconds,
        queue_name_reuse_seconds=args.queue_name_reuse_seconds,
        data_dir=None if args.in_memory else args.data_dir,
        reset=args.reset,
        # gRPC in a process of its own (it needs an inherited socket: POSIX only).
        front_process=os.name == "posix",
    )


async def _run_until_stopped(emulator: Emulator, stop: asyncio.Event) -> int:
    lost = asyncio.ensure_future(emulator.front_lost.wait())
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait({lost, stopped}, return_when=asyncio.FIRST_COMPLETED)
    lost.cancel()
    stopped.cancel()
    await emulator.stop()
    if emulator.front_lost.is_set() and not stop.is_set():
        print("tasks_emulator: the gRPC front process exited; stopping", file=sys.stderr)
        return 1
    print("tasks_emulator stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
