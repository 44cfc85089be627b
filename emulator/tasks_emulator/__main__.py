"""Command line: ``tasks-emulator [--host H] [--port P] [--keys-port K] [--queue NAME]
[--config FILE]`` (or ``python -m tasks_emulator``). Prints one ready line, stops cleanly on
SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .config import ConfigError, StartConfig, load_config
from .loop import run
from .server import Emulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="tasks-emulator",
        description="A local Cloud Tasks (google.cloud.tasks.v2 gRPC API) for development.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8123, help="gRPC port (0: any free port)")
    parser.add_argument(
        "--keys-port", type=int, default=8124, help="port of the OIDC keys (0: any free port)"
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
    for name in ("port", "keys_port"):
        if not 0 <= getattr(args, name) <= 65535:
            parser.error(f"--{name.replace('_', '-')} {getattr(args, name)}: must be 0-65535")
    return args


async def serve(args: argparse.Namespace) -> int:
    try:
        start = load_config(args.config) if args.config else StartConfig()
        start = start.with_queues(args.queue)
    except ConfigError as error:
        print(f"tasks_emulator: {error}", file=sys.stderr)
        return 2
    emulator = Emulator(
        args.host,
        args.port,
        args.keys_port,
        task_name_reuse_seconds=args.task_name_reuse_seconds,
        queue_name_reuse_seconds=args.queue_name_reuse_seconds,
        # gRPC in a process of its own (it needs an inherited socket: POSIX only).
        front_process=os.name == "posix",
    )
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
    queue_note = "".join(f", queue {name}" for name in names)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"tasks_emulator ready: gRPC {emulator.address}, OIDC certs {emulator.certs_url}"
        f"{queue_note}",
        flush=True,
    )
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
