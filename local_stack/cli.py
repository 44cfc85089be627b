"""``python -m local_stack``: the whole system on one machine (what ``make dev`` runs).

Reads a stack file through the stack's settings model, checks that the ports are free,
starts the Cloud Tasks emulator with the stack's queue, then the worker and the task-app
under gunicorn with the environment the stack gives them on Cloud Run, and streams the
three logs in one stream, each line prefixed with its part. Ctrl-C (or SIGTERM) stops all
three; a part that exits stops the others and the runner exits non-zero.

Exit codes: 0 after a requested stop, 1 when a part failed, 2 for bad settings or ports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TextIO

from local_stack.plan import (
    EMULATOR,
    PART_NAMES,
    TASK_APP,
    WORKER,
    Part,
    Ports,
    build_plan,
    state_dir_for,
)
from local_stack.queue import describe_queues
from local_stack.rendering import declared_queues
from local_stack.supervisor import STACK, LocalStack, StartupError, StopRequested
from stack_settings import SettingsError, StackSettings, load_stack_file

EXIT_STOPPED, EXIT_PART_FAILED, EXIT_USAGE = 0, 1, 2
# Stop requests closer together than this are one request, not a request to force.
SAME_STOP_SECONDS = 1.0

# (role as messages name it, option, environment variable, Ports field)
PORT_OPTIONS = (
    ("task-app", "--port", "TASK_APP_PORT", "task_app"),
    ("worker", "--worker-port", "WORKER_PORT", "worker"),
    ("emulator gRPC", "--emulator-port", "EMULATOR_PORT", "emulator"),
    ("emulator keys", "--keys-port", "EMULATOR_KEYS_PORT", "keys"),
    ("emulator REST", "--rest-port", "EMULATOR_REST_PORT", "rest"),
    (
        "task-app metadata",
        "--task-app-metadata-port",
        "TASK_APP_METADATA_PORT",
        "task_app_metadata",
    ),
    ("worker metadata", "--worker-metadata-port", "WORKER_METADATA_PORT", "worker_metadata"),
)
ROLE_PART = {
    "task-app": TASK_APP,
    "worker": WORKER,
    "emulator gRPC": EMULATOR,
    "emulator keys": EMULATOR,
    "emulator REST": EMULATOR,
    # The metadata servers are the emulator's, one per service account.
    "task-app metadata": EMULATOR,
    "worker metadata": EMULATOR,
}

_COLOURS = {EMULATOR: "\033[35m", WORKER: "\033[36m", TASK_APP: "\033[32m", STACK: "\033[1m"}
_RESET = "\033[0m"


class UsageError(ValueError):
    """Bad command-line input or environment; the message names the value and the rule."""


# Fields every Cloud Logging line carries; on a terminal they only hide the message.
_ROUTINE_FIELDS = ("severity", "message", "httpRequest")
_ROUTINE_PREFIX = "logging.googleapis.com/"


def readable(line: str) -> str | None:
    """A structured (JSON) log line as a person reads it: severity, message, then any other
    fields compactly. Other lines unchanged; None for a line with nothing to read (the
    logging library's own diagnostic record)."""
    if not line.startswith("{"):
        return line
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict) or "severity" not in record:
        return line
    extras = {
        key: value
        for key, value in record.items()
        if key not in _ROUTINE_FIELDS and not key.startswith(_ROUTINE_PREFIX)
    }
    if "message" not in record and not extras:
        return None
    text = f"{record['severity']:<7} {record.get('message', '')}"
    for key, value in extras.items():
        text += f" {key}={json.dumps(value, separators=(',', ':'))}"
    return text


class LinePrinter:
    """Writes every part's lines to one stream, each with a time and the part's name, one
    whole line at a time (the parts' threads write concurrently)."""

    def __init__(self, stream: TextIO, colour: bool | None = None, raw: bool = False) -> None:
        self.stream = stream
        if colour is None:
            colour = stream.isatty() and "NO_COLOR" not in os.environ
        self.colour = colour
        self.raw = raw
        self.width = max(len(name) for name in (*PART_NAMES, STACK))
        # Re-entrant: the Ctrl-C handler prints from the main thread, possibly while the
        # main thread is already inside a write (a plain lock would then wait for itself).
        self._lock = threading.RLock()

    def __call__(self, part: str, line: str) -> None:
        if not self.raw:
            shown = readable(line)
            if shown is None:
                return
            line = shown
        now = time.time()
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        prefix = f"{part:<{self.width}} |"
        if self.colour:
            prefix = f"{_COLOURS.get(part, '')}{prefix}{_RESET}"
        with self._lock:
            self.stream.write(f"{stamp} {prefix} {line}\n")
            self.stream.flush()


def _port(text: str, source: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise UsageError(f"{source} = {text!r}: must be a port number from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"{source} = {text!r}: must be a port number from 1 to 65535")
    return port


def parse_args(argv: Sequence[str] | None, environ: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m local_stack",
        description=(
            "Run the emulator, the worker and the task-app locally, with the queue and the "
            "environment a stack file declares. Ctrl-C stops all three."
        ),
    )
    parser.add_argument(
        "--stack",
        default="Pulumi.dev.yaml",
        help="stack file whose queue settings and names to use (default: Pulumi.dev.yaml)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address every part listens on (default: 127.0.0.1, this machine only)",
    )
    defaults = Ports()
    for role, option, variable, field in PORT_OPTIONS:
        parser.add_argument(
            option,
            metavar="N",
            help=f"{role} port (default: ${variable} or {getattr(defaults, field)})",
        )
    parser.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=PART_NAMES,
        help="do not start this part (repeatable); its command and environment are printed, "
        "so you can run it yourself, for example under a debugger",
    )
    parser.add_argument(
        "--json-logs",
        action="store_true",
        help="print the services' structured log lines as they are (one JSON object each, "
        "as Cloud Logging receives them) instead of severity, message and fields",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        metavar="DIR",
        help="where the runner keeps the stack's local files: the emulator's configuration "
        "and state, the gcloud folder (default: .local/<stack> in the project)",
    )
    parser.add_argument(
        "--reset-emulator",
        action="store_true",
        help="wipe the emulator's kept queues, tasks and signing key (<state dir>/emulator) "
        "before starting; they are kept across runs otherwise",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long each part may take to become ready (default: 60)",
    )
    args = parser.parse_args(argv)
    ports = {}
    for _role, option, variable, field in PORT_OPTIONS:
        given = getattr(args, option.lstrip("-").replace("-", "_"))
        if given is not None:
            ports[field] = _port(given, option)
        elif environ.get(variable):
            ports[field] = _port(environ[variable], variable)
    args.ports = Ports(**ports)
    return args


def port_problems(host: str, ports: Ports, skip: Sequence[str] = ()) -> list[str]:
    """Every port that cannot be used, each with a way out; empty when all are free."""
    problems = []
    seen: dict[int, str] = {}
    for role, option, variable, _field in PORT_OPTIONS:
        if ROLE_PART[role] in skip:
            continue
        port = ports.by_role()[role]
        if port in seen:
            problems.append(
                f"port {port} is given to both the {seen[port]} and the {role}: "
                f"pick another with {option} N or {variable}=N"
            )
            continue
        seen[port] = role
        if not _port_free(host, port):
            problems.append(
                f"port {port} on {host} ({role}) is already in use: stop what listens there "
                f"(`ss -ltnp 'sport = :{port}'` shows it) or pick another port with "
                f"{option} N or {variable}=N (for example `{variable}={port + 1000} make dev`)"
            )
    return problems


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers themselves do, so a port left in TIME_WAIT by a previous run
        # counts as free while one with a listener does not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def run_yourself(part: Part) -> str:
    """The shell command that runs a skipped part the way the runner would."""
    unset = [f"-u {name}" for name in part.unset]
    env = [f"{key}={shlex.quote(value)}" for key, value in part.env.items()]
    command = ["cd", shlex.quote(str(part.cwd)), "&&", "env", *unset, *env]
    return " ".join([*command, shlex.join(part.argv)])


def gcloud_hint(state_dir: Path, settings: StackSettings) -> str:
    """How to point gcloud at the local system (its own configuration folder, so the
    developer's gcloud setup is never touched)."""
    folder = state_dir / "gcloud"
    with contextlib.suppress(ValueError):
        folder = folder.relative_to(Path.cwd())
    return (
        f'gcloud: make gcloud ARGS="tasks queues describe {settings.queue_name} '
        f'--location {settings.region}" (or CLOUDSDK_CONFIG={folder} gcloud ...)'
    )


def _stop_on_signals(stack: LocalStack, say: LinePrinter) -> None:
    """SIGINT and SIGTERM stop the parts gracefully; a second request, later, kills them."""
    first_signal: list[float] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        now = time.monotonic()
        if not first_signal:
            first_signal.append(now)
            say(STACK, f"{signal.Signals(signum).name} received: stopping (again to force)")
        elif now - first_signal[0] < SAME_STOP_SECONDS:
            # One Ctrl-C can arrive twice: from the terminal and forwarded by `uv run`.
            return
        else:
            say(STACK, "second stop request: killing without waiting")
        stack.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)


def main(argv: Sequence[str] | None = None, stream: TextIO | None = None) -> int:
    out = stream or sys.stdout
    try:
        args = parse_args(argv, dict(os.environ))
        stack_file = Path(args.stack)
        settings = load_stack_file(stack_file)
        problems = port_problems(args.host, args.ports, args.skip)
    except (UsageError, SettingsError, FileNotFoundError) as error:
        problems = [str(error)]
    if problems:
        for problem in problems:
            print(f"local_stack: {problem}", file=sys.stderr)
        return EXIT_USAGE
    say = LinePrinter(out, raw=args.json_logs)

    state_dir = args.state_dir or state_dir_for(stack_file)
    queues = [queue.to_api() for queue in declared_queues(stack_file, state_dir)]
    plan = build_plan(
        settings,
        stack_file,
        queues,
        ports=args.ports,
        host=args.host,
        state_dir=state_dir,
        reset_emulator=args.reset_emulator,
    )
    for name in args.skip:
        plan[name].write_files()
        say(STACK, f"{name:<8} skipped; to run it yourself: {run_yourself(plan.pop(name))}")

    rest_url = f"http://{args.host}:{args.ports.rest}"
    names = [str(queue["name"]) for queue in queues]
    stack = LocalStack(
        plan,
        say,
        probes={EMULATOR: lambda: describe_queues(rest_url, names)},
        startup_timeout=args.startup_timeout,
    )

    _stop_on_signals(stack, say)

    say(STACK, f"stack file {stack_file}: queue {settings.queue_id}")
    try:
        stack.start()
    except StopRequested:
        stack.stop()
        return EXIT_STOPPED
    except StartupError as error:
        say(STACK, f"could not start: {error}; stopping the others")
        stack.stop()
        return EXIT_PART_FAILED
    if EMULATOR in plan:
        say(STACK, gcloud_hint(state_dir, settings))
    if TASK_APP in plan:
        say(STACK, f"open {plan[TASK_APP].url} (Ctrl-C stops everything)")
    else:
        say(STACK, "running (Ctrl-C stops everything)")
    code = stack.wait()
    stack.stop()
    if code != EXIT_STOPPED:
        say(STACK, f"stopped because {stack.failed_part} exited")
    return code
