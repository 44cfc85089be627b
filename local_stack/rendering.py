"""What the stack program declares, as the local system needs it: every Cloud Tasks queue
with its settings and state, and every IAM grant on each queue.

Read from the same mock run of the real Pulumi program that renders the reviewed manifests
(``stack_review.run_stack``), so the local queues and their IAM policies are the stack's
own, with no second list kept by hand. A run costs a few seconds (it imports Pulumi and
the providers' SDKs), so its result is kept in the stack's state folder under a hash of
every file the run reads, and reused until one of them changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
QUEUE_TYPE = "gcp:cloudtasks/queue:Queue"
QUEUE_IAM_MEMBER_TYPE = "gcp:cloudtasks/queueIamMember:QueueIamMember"
# The inputs of a mock run: the program, what it imports, its config and the locked SDKs.
_INPUT_GLOBS = (
    "__main__.py",
    "stack_settings.py",
    "Pulumi.yaml",
    "uv.lock",
    "components/*.py",
    "stack_review/*.py",
    "app/service_common/*.py",
)
_CACHE_VERSION = 1


@dataclass(frozen=True)
class DeclaredQueue:
    """One queue as the stack declares it, in the Cloud Tasks REST API's JSON shape."""

    name: str
    """The full id, projects/P/locations/L/queues/Q."""
    settings: dict[str, Any]
    """rateLimits, retryConfig, stackdriverLoggingConfig and state, as the API writes them."""
    bindings: dict[str, list[str]]
    """role -> members granted on this queue."""

    def to_api(self) -> dict[str, Any]:
        """The queue with its IAM policy, as the emulator's --config file takes it."""
        queue = {"name": self.name, **self.settings}
        queue["iamPolicy"] = {
            "bindings": [
                {"role": role, "members": sorted(members)}
                for role, members in sorted(self.bindings.items())
            ]
        }
        return queue


def declared_queues(stack_file: Path, state_dir: Path) -> list[DeclaredQueue]:
    """Every queue the program declares for ``stack_file``, from the cache when it is
    current, otherwise from a new mock run (which refreshes the cache)."""
    cache = state_dir / "declared-queues.json"
    key = _inputs_hash(stack_file)
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("version") == _CACHE_VERSION and cached.get("key") == key:
            return [DeclaredQueue(**queue) for queue in cached["queues"]]
    except (OSError, ValueError, TypeError, KeyError):
        pass  # no cache, or one from another version: render again
    queues = render_queues(stack_file)
    state_dir.mkdir(parents=True, exist_ok=True)
    cache.write_text(
        json.dumps(
            {"version": _CACHE_VERSION, "key": key, "queues": [q.__dict__ for q in queues]},
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    return queues


def render_queues(stack_file: Path) -> list[DeclaredQueue]:
    """Runs the program under mocks and reads its queues and their grants."""
    from stack_review.runner import run_stack  # noqa: PLC0415 - a few seconds; only here

    run = run_stack(stack_file)
    bindings: dict[tuple[str, str, str], dict[str, set[str]]] = {}
    for grant in run.of_type(QUEUE_IAM_MEMBER_TYPE):
        inputs = grant.inputs
        where = (str(inputs["project"]), str(inputs["location"]), str(inputs["name"]))
        bindings.setdefault(where, {}).setdefault(str(inputs["role"]), set()).add(
            str(inputs["member"])
        )
    queues = []
    for queue in run.of_type(QUEUE_TYPE):
        project = str(queue.outputs["project"])
        location, short = str(queue.inputs["location"]), str(queue.inputs["name"])
        queues.append(
            DeclaredQueue(
                name=f"projects/{project}/locations/{location}/queues/{short}",
                settings=_api_settings(queue.inputs),
                bindings={
                    role: sorted(members)
                    for role, members in bindings.get((project, location, short), {}).items()
                },
            )
        )
    return sorted(queues, key=lambda q: q.name)


def _api_settings(inputs: dict[str, Any]) -> dict[str, Any]:
    """A queue resource's inputs in the API's shape (the provider's names are the API's,
    except the desired state, which the API reports as ``state``)."""
    settings: dict[str, Any] = {}
    for key in ("rateLimits", "retryConfig", "stackdriverLoggingConfig"):
        if inputs.get(key):
            settings[key] = {name: _number(value) for name, value in inputs[key].items()}
    settings["state"] = inputs.get("desiredState") or "RUNNING"
    return settings


def _number(value: Any) -> Any:
    """Pulumi hands every number over as a float; the API's integers are written as such."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _inputs_hash(stack_file: Path) -> str:
    digest = hashlib.sha256()
    paths = {stack_file.resolve()}
    for pattern in _INPUT_GLOBS:
        paths.update(path.resolve() for path in PROJECT_DIR.glob(pattern))
    for path in sorted(paths):
        digest.update(
            str(
                path.relative_to(PROJECT_DIR) if path.is_relative_to(PROJECT_DIR) else path
            ).encode()
        )
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()
