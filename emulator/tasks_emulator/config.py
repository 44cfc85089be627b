"""What the emulator sets up when it starts: the queues given on the command line
(``--queue NAME``) and in a JSON file (``--config FILE``).

The file holds ``{"queues": [Queue, ...], "projects": [Project, ...]}``. Each Queue is
exactly as the Cloud Tasks REST API writes one (what ``gcloud tasks queues describe
--format=json`` prints): ``name``, ``rateLimits``, ``retryConfig``,
``stackdriverLoggingConfig``, and ``state`` (``PAUSED`` creates the queue paused), plus
``iamPolicy``: the queue's IAM policy as ``gcloud tasks queues get-iam-policy
--format=json`` prints it (``{"bindings": [{"role": ..., "members": [...]}]}``). Each
Project is ``{"name": "projects/P", "iamPolicy": Policy}``: a policy every queue of the
project inherits, and the one CreateQueue and ListQueues are authorized against. A queue
that exists already is updated to the given settings, as a deploy would. Every problem is
reported with the file, the queue and what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .server import Emulator

KNOWN_KEYS = frozenset({"queues", "projects"})
STATES = frozenset({"RUNNING", "PAUSED"})


class ConfigError(ValueError):
    """A start-up configuration the emulator cannot apply; the message says where and why."""


@dataclass(frozen=True)
class StartConfig:
    """Queues to create or update at start, each in the REST API's JSON shape."""

    queues: tuple[dict[str, Any], ...] = ()
    source: str = "the command line"
    projects: tuple[dict[str, Any], ...] = ()

    def with_queues(self, names: list[str]) -> StartConfig:
        """This configuration plus queues created with the API's defaults."""
        given = {str(queue.get("name")) for queue in self.queues}
        extra = tuple({"name": name} for name in names if name not in given)
        return StartConfig(self.queues + extra, self.source, self.projects)

    def apply(self, emulator: Emulator) -> list[str]:
        """Creates or updates every queue; returns their names."""
        # Imported here: the API's error type pulls in grpc, which a caller that only
        # reads a file does not need.
        from google.protobuf.json_format import ParseError  # noqa: PLC0415

        from .errors import ApiError  # noqa: PLC0415

        for project in self.projects:
            name = str(project["name"])
            try:
                emulator.set_project_policy(name, project.get("iamPolicy", {}))
            except (ApiError, ParseError, ValueError) as error:
                raise ConfigError(f"{self.source}: project {name}: {error}") from None
        names = []
        for queue in self.queues:
            name = str(queue.get("name", ""))
            try:
                emulator.ensure_queue(queue)
            except (ApiError, ParseError, ValueError) as error:
                raise ConfigError(f"{self.source}: queue {name or '(no name)'}: {error}") from None
            names.append(name)
        return names


@dataclass
class _Problems:
    source: str
    found: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.found.append(message)


def _queues(data: dict[str, Any], problems: _Problems) -> list[Any]:
    """``queues``: Queue objects, each with a full name and a state the API allows."""
    queues = data.get("queues", [])
    if not isinstance(queues, list):
        problems.add(f"queues must be a list of Queue objects, got {type(queues).__name__}")
        return []
    for index, queue in enumerate(queues):
        where = f"queues[{index}]"
        if not isinstance(queue, dict):
            problems.add(f"{where} must be a Queue object, got {type(queue).__name__}")
            continue
        if not isinstance(queue.get("name"), str) or not queue["name"]:
            problems.add(f"{where}.name must be projects/P/locations/L/queues/Q")
        state = queue.get("state", "RUNNING")
        if state not in STATES:
            problems.add(f"{where}.state = {state!r}: must be RUNNING or PAUSED")
    return queues


def _projects(data: dict[str, Any], problems: _Problems) -> list[Any]:
    """``projects``: each a name and, optionally, the project's IAM policy."""
    projects = data.get("projects", [])
    if not isinstance(projects, list):
        problems.add(f"projects must be a list of Project objects, got {type(projects).__name__}")
        return []
    for index, project in enumerate(projects):
        if not isinstance(project, dict) or not isinstance(project.get("name"), str):
            problems.add(f'projects[{index}] must be {{"name": "projects/P", "iamPolicy": ...}}')
    return projects


def parse_config(text: str, source: str) -> StartConfig:
    """The start-up configuration in ``text`` (JSON), or ConfigError listing every problem."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ConfigError(f"{source}: not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f'{source}: must be a JSON object such as {{"queues": [...]}}')
    problems = _Problems(source)
    for key in sorted(set(data) - KNOWN_KEYS):
        problems.add(f"unknown key {key!r} (known: {', '.join(sorted(KNOWN_KEYS))})")
    queues = _queues(data, problems)
    projects = _projects(data, problems)
    if problems.found:
        listed = "\n".join(f"  - {problem}" for problem in problems.found)
        raise ConfigError(f"{source}: {len(problems.found)} problem(s):\n{listed}")
    return StartConfig(tuple(queues), source, tuple(projects))


def load_config(path: str | Path) -> StartConfig:
    """The start-up configuration in the JSON file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read the configuration file {path}: {error}") from None
    return parse_config(text, str(path))
