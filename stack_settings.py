"""The settings of one stack (environment), typed and validated in one place.

Both the Pulumi program (``__main__.py``) and the tool that runs the system without a
cloud (the local runner, which hands the emulator its queue) read a stack's settings
through this module, so the queue that runs locally has exactly the retry and rate
configuration that ``pulumi up`` declares.

Defaults live in ``Pulumi.yaml``'s ``config:`` schema, as the Pulumi CLI applies them;
``Pulumi.<stack>.yaml`` holds what differs per environment. This module merges the two the
way the CLI does, then checks every value and reports every problem at once, each naming
the key, the value given and what is allowed, before anything is declared.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from service_common import contract
from service_common.queue_spec import (
    MAX_CONCURRENT_DISPATCHES,
    MAX_DISPATCHES_PER_SECOND,
    QueueSpec,
    RateLimits,
    RetryConfig,
)

PROJECT = "cloud-run-tasks"
"""The Pulumi project name: the namespace of this project's config keys."""

PROJECT_DIR = Path(__file__).resolve().parent

# ---- Cloud Run's limits on an instance's CPUs and memory ---------------------------------
# Data with its source (components/data/cloud_run_limits.json), read here for the settings'
# checks and by the Cloud Run component.
CLOUD_RUN_LIMITS = PROJECT_DIR / "components" / "data" / "cloud_run_limits.json"


@dataclass(frozen=True)
class MemoryRange:
    min_mib: int
    max_mib: int


@cache
def memory_by_cpu() -> dict[int, MemoryRange]:
    """CPU count -> the memory an instance with that many CPUs may have."""
    table = json.loads(CLOUD_RUN_LIMITS.read_text("utf-8"))["memory_mib_by_cpu"]
    return {int(cpu): MemoryRange(v["min"], v["max"]) for cpu, v in table.items()}


def cloud_run_limits_source() -> str:
    return str(json.loads(CLOUD_RUN_LIMITS.read_text("utf-8"))["source"])


def show_mib(mib: int) -> str:
    """4096 -> '4Gi', 512 -> '512Mi'."""
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def memory_problem(cpu: int, memory_mib: int) -> str | None:
    """Why ``memory_mib`` does not fit ``cpu`` CPUs on Cloud Run (None when it does), with
    what to set instead."""
    limits = memory_by_cpu()
    if cpu not in limits:
        return f"{cpu} CPUs is not a Cloud Run choice ({', '.join(map(str, sorted(limits)))})"
    allowed = limits[cpu]
    if memory_mib > allowed.max_mib:
        enough = [c for c, r in sorted(limits.items()) if r.max_mib >= memory_mib]
        more = f"{enough[0]} CPUs or more, or " if enough else ""
        return (
            f"{cpu} CPU{'s allow' if cpu > 1 else ' allows'} at most "
            f"{show_mib(allowed.max_mib)} on Cloud Run; give it {more}at most "
            f"{show_mib(allowed.max_mib)} of memory"
        )
    if memory_mib < allowed.min_mib:
        return f"{cpu} CPUs need at least {show_mib(allowed.min_mib)} on Cloud Run"
    return None


MEMORY_BY_CPU = memory_by_cpu()
MAX_MEMORY_MIB = max(limit.max_mib for limit in MEMORY_BY_CPU.values())
DEAD_LETTER_SUFFIX = "-dead"

_DURATION = re.compile(r"^(\d+)(?:\.(\d{1,9}))?s$")
_MEMORY = re.compile(r"^([1-9]\d*)(Mi|Gi)$")
_DIGEST_REF = re.compile(r"^[a-z0-9.-]+(?::\d+)?(?:/[a-z0-9._-]+)+@sha256:[0-9a-f]{64}$")


def _parse_duration(value: Any) -> Decimal:
    """'1s', '0.100s', '3600s' -> seconds. The format Cloud Tasks and pulumi-gcp use."""
    text = value.strip() if isinstance(value, str) else ""
    if text.startswith("-") and _DURATION.match(text[1:]):
        raise ValueError("must not be negative (a duration in seconds such as '1s' or '0.5s')")
    if not isinstance(value, str) or not (match := _DURATION.match(value.strip())):
        raise ValueError("must be a duration in seconds such as '1s', '0.5s' or '3600s'")
    whole, fraction = match.groups()
    return Decimal(f"{whole}.{fraction or '0'}")


def _parse_rate(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number such as 100 or 0.5") from None
    if not math.isfinite(rate) or rate <= 0 or rate > MAX_DISPATCHES_PER_SECOND:
        raise ValueError(
            f"must be greater than 0 and at most {MAX_DISPATCHES_PER_SECOND:g} per second"
        )
    return rate


# Zero values the provider never sends to the API (it omits a zero as unset), so that the
# cloud's queue silently gets the API's default where the local emulator would take 0:
# refused, with what to write instead.
# https://cloud.google.com/tasks/docs/reference/rest/v2/projects.locations.queues#RetryConfig
NEVER_SENT_ZERO = {
    "max_attempts": "the provider never sends 0, so Cloud Tasks would apply its default "
    "(100 attempts); write 1 for a single attempt with no retry, or -1 for unlimited",
    "max_doublings": "the provider never sends 0, so Cloud Tasks would apply its default "
    "(16 doublings); write 1 (the wait doubles once, then grows linearly), or set "
    "maxBackoff equal to minBackoff for a constant wait",
    "logging_sampling_ratio": "the provider never sends 0, so the queue would keep "
    'whatever logging the API applies; write "" (empty) to leave queue logging off',
}


def _not_zero(field: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if value is not None and value == 0:
            raise ValueError(NEVER_SENT_ZERO[field])
        return value

    return AfterValidator(check)


def _parse_ratio(value: Any) -> float | None:
    if value is None or value == "":
        return None
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be empty (logging off) or a number above 0.0, at most 1.0") from None
    if not 0.0 <= ratio <= 1.0:
        raise ValueError("must be empty (logging off) or a number above 0.0, at most 1.0")
    return ratio


def _check_deadline(seconds: Decimal) -> Decimal:
    low, high = contract.MIN_DISPATCH_DEADLINE_SECONDS, contract.MAX_DISPATCH_DEADLINE_SECONDS
    if not low <= seconds <= high:
        raise ValueError(
            f"is also the dispatch deadline, which Cloud Tasks allows from {low}s to {high}s "
            "(30 min)"
        )
    return seconds


def _check_memory(value: str) -> str:
    match = _MEMORY.match(value)
    if not match:
        raise ValueError("must be a whole amount in Mi or Gi such as 512Mi or 2Gi")
    if _memory_mib(value) > MAX_MEMORY_MIB:
        raise ValueError(f"must be at most {show_mib(MAX_MEMORY_MIB)}")
    return value


def _memory_mib(value: str) -> int:
    amount, unit = _MEMORY.match(value).groups()  # type: ignore[union-attr]
    return int(amount) * (1024 if unit == "Gi" else 1)


def _check_image(value: str) -> str:
    if value and not _DIGEST_REF.match(value):
        raise ValueError(
            "must be empty (build from app/) or an image reference by digest, "
            "such as us-docker.pkg.dev/PROJECT/REPO/NAME@sha256:<64 hex digits>"
        )
    return value


def _whole_range(low: int, high: int | None = None, note: str = "") -> AfterValidator:
    """A range check whose message names both limits (pydantic's names only the one crossed)."""

    def check(value: int) -> int:
        if value < low or (high is not None and value > high):
            allowed = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be a whole number {allowed}{note}")
        return value

    return AfterValidator(check)


def _name_pattern(pattern: str, allowed: str) -> AfterValidator:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value):
            raise ValueError(f"must be {allowed}")
        return value

    return AfterValidator(check)


Duration = Annotated[Decimal, BeforeValidator(_parse_duration)]
Rate = Annotated[float, BeforeValidator(_parse_rate)]
Ratio = Annotated[float | None, BeforeValidator(_parse_ratio), _not_zero("logging_sampling_ratio")]
Deadline = Annotated[Decimal, BeforeValidator(_parse_duration), AfterValidator(_check_deadline)]
ServiceName = Annotated[
    str,
    _name_pattern(
        r"^[a-z](?:[a-z0-9-]{4,28}[a-z0-9])$",
        "6-30 characters of lowercase letters, digits and hyphens, starting with a letter "
        "(it names both a Cloud Run service and its service account)",
    ),
]
ImageRef = Annotated[str, AfterValidator(_check_image)]


class StackSettings(BaseModel):
    """Every setting of one stack. Field names are snake_case; config keys are camelCase."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    project: str = Field(alias="gcp:project")
    region: Annotated[
        str, _name_pattern(r"^[a-z]+-[a-z]+[0-9]+$", "a region id such as us-central1")
    ]
    registry_location: Annotated[
        str, _name_pattern(r"^[a-z]+(?:-[a-z]+[0-9]+)?$", "a location such as us or us-central1")
    ]
    repository_name: Annotated[
        str,
        _name_pattern(
            r"^[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$", "lowercase letters, digits and hyphens"
        ),
    ]
    keep_image_versions: Annotated[int, _whole_range(1, 1000)]
    queue_name: Annotated[
        str,
        _name_pattern(
            r"^[A-Za-z0-9-]{1,95}$",
            "1-95 letters, digits or hyphens (the dead-letter queue is <name>-dead, and "
            "Cloud Tasks allows 100)",
        ),
    ]
    task_app_name: ServiceName
    worker_name: ServiceName
    max_dispatches_per_second: Rate
    max_concurrent_dispatches: Annotated[
        int, _whole_range(1, MAX_CONCURRENT_DISPATCHES, " (Cloud Tasks' limit)")
    ]
    max_attempts: Annotated[
        int, _whole_range(-1, note=" (-1 = unlimited)"), _not_zero("max_attempts")
    ]
    min_backoff: Duration
    max_backoff: Duration
    max_doublings: Annotated[int, _not_zero("max_doublings"), _whole_range(1)]
    max_retry_duration: Duration
    logging_sampling_ratio: Ratio
    worker_timeout: Deadline
    worker_cpu: int
    worker_memory: Annotated[str, AfterValidator(_check_memory)]
    task_app_cpu: int
    task_app_memory: Annotated[str, AfterValidator(_check_memory)]
    worker_min_instances: Annotated[int, _whole_range(0, 1000)]
    worker_max_instances: Annotated[int, _whole_range(1, 1000)]
    task_app_max_instances: Annotated[int, _whole_range(1, 1000)]
    deletion_protection: bool
    task_app_image: ImageRef
    worker_image: ImageRef

    # ---- derived values: one setting, every use -------------------------------------

    @property
    def dispatch_deadline_seconds(self) -> int:
        """Tasks must not outlive the worker's request timeout: the two are one setting."""
        return int(self.worker_timeout)

    @property
    def queue_id(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/queues/{self.queue_name}"

    @property
    def dead_letter_queue_name(self) -> str:
        """The paused queue that keeps the tasks given up on: never dispatched, so its
        tasks stay (until their retention ends) for a person to replay or discard."""
        return f"{self.queue_name}{DEAD_LETTER_SUFFIX}"

    @property
    def dead_letter_queue_id(self) -> str:
        return (
            f"projects/{self.project}/locations/{self.region}/queues/{self.dead_letter_queue_name}"
        )

    def retry_config_json(self) -> str:
        """The queue's retry config as the API writes it, as the services get it
        (QUEUE_RETRY_CONFIG)."""
        return json.dumps(self.queue_spec().retry_config.to_api(), sort_keys=True)

    def queue_spec(self) -> QueueSpec:
        """The queue's rate limits, retry configuration and logging, as one typed value."""
        return QueueSpec(
            rate_limits=RateLimits(
                max_dispatches_per_second=self.max_dispatches_per_second,
                max_concurrent_dispatches=self.max_concurrent_dispatches,
            ),
            retry_config=RetryConfig(
                max_attempts=self.max_attempts,
                min_backoff=self.min_backoff,
                max_backoff=self.max_backoff,
                max_doublings=self.max_doublings,
                max_retry_duration=self.max_retry_duration,
            ),
            logging_sampling_ratio=self.logging_sampling_ratio,
        )


class SettingsError(ValueError):
    """Every problem with a stack's settings, each naming the key, the value and the rule."""

    def __init__(self, problems: list[str], source: str) -> None:
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} invalid setting(s) in {source}:\n{lines}")


def _config_key(field: str) -> str:
    info = StackSettings.model_fields[field]
    alias = info.alias or to_camel(field)
    return alias if ":" in alias else f"{PROJECT}:{alias}"


def _quietly(parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except (TypeError, ValueError, InvalidOperation):
        return None


def _whole(v: Any) -> int:
    if isinstance(v, bool) or not re.fullmatch(r"-?\d+", str(v).strip()):
        raise ValueError(v)
    return int(v)


class _Raw:
    """A stack's raw config, read by settings field name."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        self.raw = raw

    @staticmethod
    def key(field: str) -> str:
        return _config_key(field)

    def given(self, field: str) -> bool:
        return self.key(field) in self.raw

    def shown(self, field: str) -> Any:
        return self.raw[self.key(field)]

    def value(self, field: str, parse: Any) -> Any:
        return _quietly(parse, self.raw.get(self.key(field)))


def _ordered_problems(config: _Raw) -> list[str]:
    """minBackoff <= maxBackoff and workerMinInstances <= workerMaxInstances."""
    key = config.key
    problems = []
    low = config.value("min_backoff", _parse_duration)
    high = config.value("max_backoff", _parse_duration)
    if low is not None and high is not None and low > high:
        problems.append(
            f"{key('min_backoff')} = {config.shown('min_backoff')!r}: must be at most "
            f"{key('max_backoff')} ({config.shown('max_backoff')!r})"
        )
    low = config.value("worker_min_instances", _whole)
    high = config.value("worker_max_instances", _whole)
    if low is not None and high is not None and low > high:
        problems.append(
            f"{key('worker_min_instances')} = {low!r}: must be at most "
            f"{key('worker_max_instances')} ({high!r})"
        )
    return problems


def _memory_problems(config: _Raw) -> list[str]:
    """Each service's CPU is one of Cloud Run's choices and its memory within what they allow."""
    key = config.key
    problems = []
    choices = ", ".join(map(str, sorted(MEMORY_BY_CPU)))
    for service in ("worker", "task_app"):
        cpu_field, memory_field = f"{service}_cpu", f"{service}_memory"
        cpu, memory = config.value(cpu_field, _whole), config.value(memory_field, _check_memory)
        if config.given(cpu_field) and cpu not in MEMORY_BY_CPU:
            problems.append(
                f"{key(cpu_field)} = {config.shown(cpu_field)!r}: "
                f"must be one of {choices} (Cloud Run's CPU choices)"
            )
        elif cpu is not None and memory is not None:
            problem = memory_problem(cpu, _memory_mib(memory))
            if problem:
                problems.append(
                    f"{key(memory_field)} = {memory!r}: {problem} ({key(cpu_field)} = {cpu})"
                )
    return problems


def _cross_field_problems(raw: Mapping[str, Any]) -> list[str]:
    """Rules between two settings, checked whenever both values parse on their own, so
    that they are reported together with every other problem."""
    config = _Raw(raw)
    return _ordered_problems(config) + _memory_problems(config)


def _did_you_mean(name: str, known: list[str]) -> str:
    """A typo's likely intended key, so the message points straight at the fix."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def validate_config(config: Mapping[str, Any], source: str = "stack config") -> StackSettings:
    """Checks a stack's merged config (keys as Pulumi names them, such as
    ``cloud-run-tasks:maxAttempts`` and ``gcp:project``) and returns its settings, or raises
    SettingsError listing every problem at once."""
    prefix = f"{PROJECT}:"
    aliases = {
        _config_key(name): info.alias or to_camel(name)
        for name, info in StackSettings.model_fields.items()
    }
    to_key = {alias: key for key, alias in aliases.items()}
    known = sorted(k.removeprefix(prefix) for k in aliases if k.startswith(prefix))
    problems = [
        f"{key} = {value!r}: unknown setting{_did_you_mean(key.removeprefix(prefix), known)} "
        f"(known: {', '.join(known)})"
        for key, value in config.items()
        if key.startswith(prefix) and key not in aliases
    ]
    values = {alias: config[key] for key, alias in aliases.items() if key in config}
    settings = None
    try:
        settings = StackSettings.model_validate(values, by_alias=True)
    except ValidationError as error:
        for item in error.errors():
            key = to_key.get(str(item["loc"][0]), str(item["loc"][0])) if item["loc"] else "?"
            if key in (_config_key("worker_cpu"), _config_key("task_app_cpu")):
                continue  # reported with its cross-field rule below
            if item["type"] == "missing":
                problems.append(f"{key}: missing (set it with `pulumi config set {key}`)")
                continue
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"{key} = {item.get('input')!r}: {message}")
    problems.extend(_cross_field_problems(config))
    if problems or settings is None:
        raise SettingsError(problems, source)
    return settings


def project_defaults(project_file: Path) -> dict[str, Any]:
    """The defaults of Pulumi.yaml's config schema, keyed as the CLI passes them."""
    project = yaml.safe_load(project_file.read_text()) or {}
    defaults = {}
    for key, schema in (project.get("config") or {}).items():
        if isinstance(schema, dict) and "default" in schema:
            full_key = key if ":" in key else f"{project['name']}:{key}"
            defaults[full_key] = schema["default"]
    return defaults


def merged_stack_config(stack_file: Path, project_file: Path | None = None) -> dict[str, Any]:
    """Pulumi.yaml's defaults overlaid with a Pulumi.<stack>.yaml's values, as the CLI does."""
    project_file = project_file or stack_file.with_name("Pulumi.yaml")
    stack = yaml.safe_load(stack_file.read_text()) or {}
    config = project_defaults(project_file)
    for key, value in (stack.get("config") or {}).items():
        if isinstance(value, dict) and "secure" in value:
            continue  # secrets are not settings of this model
        full_key = key if ":" in key else f"{PROJECT}:{key}"
        config[full_key] = value
    return config


def load_stack_file(stack_file: str | Path) -> StackSettings:
    """Settings of one committed stack file, such as Pulumi.dev.yaml."""
    path = Path(stack_file)
    if not path.exists():
        path_in_project = PROJECT_DIR / path
        if not path_in_project.exists():
            raise FileNotFoundError(f"stack file {stack_file} not found")
        path = path_in_project
    return validate_config(merged_stack_config(path), source=path.name)


def stack_files(project_dir: Path = PROJECT_DIR) -> list[Path]:
    """Every committed Pulumi.<stack>.yaml."""
    return sorted(p for p in project_dir.glob("Pulumi.*.yaml") if p.name != "Pulumi.yaml")
