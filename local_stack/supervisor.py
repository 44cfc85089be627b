"""Starts the parts of the local system, streams their logs, and stops all of them.

Each part runs in its own process group (its own session), so a stop reaches every process
it started (gunicorn's workers included) and a Ctrl-C in the terminal reaches only this
supervisor, which then stops the parts in an orderly way: SIGTERM to each group, a grace
period, then SIGKILL to whatever is left. A part that exits on its own is reported by name
and stops the rest.

Built on the standard library rather than a Procfile runner such as honcho: the runner must
know when each part is ready (an HTTP probe, and for the emulator its queues read back),
stop them with a grace period and make them die with it, which a Procfile runner does not
do, and the few lines of process handling needed here are easier to test than a new
dependency's behaviour. Every part starts at once: none needs another to start, only to
serve (the services reach the emulator on their first request), so the system is ready
as soon as its slowest part is.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from local_stack.plan import Part

STACK = "stack"
"""The name under which the supervisor's own status lines appear in the stream."""

LineSink = Callable[[str, str], None]
"""Receives every log line: (part name or STACK, line without its newline)."""


class StartupError(RuntimeError):
    """A part did not become ready; the message names it and says what was seen."""


class StopRequested(RuntimeError):
    """A stop was requested while the parts were starting."""


_DIE_WITH_PARENT = Path(__file__).with_name("die_with_parent.py")


def _dies_with_us(argv: Sequence[str]) -> list[str]:
    """``argv`` run so that the kernel stops it if this supervisor is killed outright (no
    chance to clean up), on Linux; elsewhere the supervisor's own stop is the safeguard."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-I", "-S", str(_DIE_WITH_PARENT), str(os.getpid()), *argv]


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """True when GET url answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (local URL)
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError, ValueError):
        return False


class LocalStack:
    """The running parts of the local system.

    ``start`` starts the parts and waits until each is ready, ``wait``
    blocks until a stop is requested or a part exits, ``stop`` stops them all. Parts must be
    started from a thread that outlives them (the main thread), because the kernel's
    parent-death signal is tied to the starting thread.
    """

    def __init__(
        self,
        parts: Mapping[str, Part],
        on_line: LineSink,
        *,
        probes: Mapping[str, Callable[[], str]] | None = None,
        startup_timeout: float = 60.0,
        grace: float = 10.0,
    ) -> None:
        self.parts = dict(parts)
        self.on_line = on_line
        self.probes = dict(probes or {})
        self.startup_timeout = startup_timeout
        self.grace = grace
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.failed_part: str | None = None
        self._stop_requested = threading.Event()
        self._force = threading.Event()
        self._readers: list[threading.Thread] = []

    # ---- requests from signal handlers or other threads ------------------------------

    def request_stop(self) -> None:
        """Asks the running ``start``/``wait`` to return; asked twice, the stop skips its
        grace period and kills at once."""
        if self._stop_requested.is_set():
            self._force.set()
        self._stop_requested.set()

    # ---- start -------------------------------------------------------------------

    def start(self) -> None:
        """Starts every part at once and waits until each is ready. Raises StartupError
        naming the part that failed, or StopRequested; in both cases the caller then calls
        stop()."""
        for part in self.parts.values():
            self._spawn(part)
        self._wait_ready(self.parts)

    def _spawn(self, part: Part) -> None:
        part.write_files()
        inherited = {key: value for key, value in os.environ.items() if key not in part.unset}
        env = {**inherited, **part.env, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            _dies_with_us(part.argv),
            cwd=part.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[part.name] = process
        reader = threading.Thread(
            target=self._pump, args=(part.name, process), name=f"log-{part.name}", daemon=True
        )
        reader.start()
        self._readers.append(reader)

    def _pump(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for raw in iter(process.stdout.readline, b""):
                self.on_line(name, raw.decode("utf-8", "replace").rstrip("\r\n"))

    def _wait_ready(self, names: Iterable[str]) -> None:
        waiting = {name: time.monotonic() for name in names}
        deadline = time.monotonic() + self.startup_timeout
        while waiting:
            if self._stop_requested.is_set():
                raise StopRequested("stop requested while starting")
            for name, started in list(waiting.items()):
                part, process = self.parts[name], self.processes[name]
                code = process.poll()
                if code is not None:
                    self.failed_part = name
                    raise StartupError(
                        f"{name} exited with code {code} before it was ready (its log is above)"
                    )
                detail = self._ready_detail(part)
                if detail is not None:
                    seconds = time.monotonic() - started
                    self.on_line(
                        STACK,
                        f"{name:<8} ready in {seconds:.1f} s: {detail} (pid {process.pid})",
                    )
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                name = next(iter(waiting))
                self.failed_part = name
                raise StartupError(
                    f"{name} was not ready after {self.startup_timeout:g} s "
                    f"({self.parts[name].health_url} did not answer 200; its log is above)"
                )
            if waiting:
                self._stop_requested.wait(0.1)

    def _ready_detail(self, part: Part) -> str | None:
        if not http_ok(part.health_url):
            return None
        probe = self.probes.get(part.name)
        if probe is None:
            return part.url
        try:
            return f"{part.url}; {probe()}"
        except Exception:  # any failure means: not ready yet
            return None

    # ---- run ---------------------------------------------------------------------

    def wait(self) -> int:
        """Blocks until a stop is requested (returns 0) or a part exits (returns 1, after
        saying which)."""
        while not self._stop_requested.is_set():
            for name, process in self.processes.items():
                code = process.poll()
                if code is not None:
                    self.failed_part = name
                    self.on_line(STACK, f"{name} exited with code {code}; stopping the others")
                    return 1
            self._stop_requested.wait(0.2)
        return 0

    # ---- stop --------------------------------------------------------------------

    def stop(self) -> None:
        """SIGTERM to every part's process group, then SIGKILL to what is left after the
        grace period (at once after a second stop request). Safe to call more than once."""
        running = {name: p for name, p in self.processes.items() if p.returncode is None}
        if running:
            self.on_line(STACK, f"stopping {', '.join(running)}")
        for process in running.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for name, process in running.items():
            while process.poll() is None and time.monotonic() < deadline:
                if self._force.is_set():
                    break
                time.sleep(0.05)
            if process.poll() is None:
                self.on_line(STACK, f"{name} still running: killing it")
                _signal_group(process, signal.SIGKILL)
                process.wait()
            else:
                self.on_line(STACK, f"{name} stopped (exit code {process.returncode})")
            # Whatever the part left in its group (a gunicorn worker whose master died).
            _signal_group(process, signal.SIGKILL)
        for reader in self._readers:
            reader.join(timeout=2)
        self._readers.clear()

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Each part leads its own session, so its process group id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
