"""Settings reach the program as the Pulumi CLI passes them, and a bad one stops the
program, naming the key, the value given and what is allowed, before anything is declared."""

from __future__ import annotations

import json

import pulumi
import pytest

from stack_review import ProgramFailed, cli_config, run_stack
from tests.infra.helpers import IMAGE, STACK_FILES, container, service_named

KEY = "cloud-run-tasks:"
DIGEST = "sha256:" + "ab" * 32


def failure(overrides: dict[str, str | None], stack_file: str = "Pulumi.dev.yaml") -> ProgramFailed:
    with pytest.raises(ProgramFailed) as caught:
        run_stack(stack_file, overrides)
    return caught.value


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("maxDispatchesPerSecond", "800", ["800", "500"]),
        ("maxDispatchesPerSecond", "0", ["'0'", "greater than 0"]),
        ("maxDispatchesPerSecond", "fast", ["'fast'", "a number"]),
        ("maxConcurrentDispatches", "0", ["'0'", "from 1 to 5000"]),
        ("maxConcurrentDispatches", "5001", ["5001", "from 1 to 5000"]),
        ("maxAttempts", "-2", ["-2", "at least -1"]),
        ("minBackoff", "-1s", ["-1s", "must not be negative"]),
        ("maxRetryDuration", "1h", ["'1h'", "duration in seconds"]),
        ("maxDoublings", "-1", ["-1", "at least 1"]),
        ("maxDoublings", "0", ["0", "never sends 0", "default (16 doublings)", "write 1"]),
        ("maxAttempts", "0", ["0", "never sends 0", "default (100 attempts)", "write 1"]),
        ("loggingSamplingRatio", "0", ["'0'", "never sends 0", 'write "" (empty)']),
        ("loggingSamplingRatio", "0.0", ["'0.0'", "never sends 0", 'write "" (empty)']),
        ("workerMemory", "9Gi", ["'9Gi'", "2 CPUs allow at most 8Gi", "4 CPUs or more"]),
        ("workerMemory", "33Gi", ["'33Gi'", "at most 32Gi"]),
        ("taskAppMemory", "5Gi", ["'5Gi'", "1 CPU allows at most 4Gi", "2 CPUs or more"]),
        ("taskAppCpu", "3", ["'3'", "1, 2, 4, 6, 8"]),
        ("workerTimeout", "10s", ["'10s'", "15s to 1800s"]),
        ("workerTimeout", "1801s", ["'1801s'", "15s to 1800s"]),
        ("workerCpu", "3", ["'3'", "1, 2, 4, 6, 8"]),
        ("workerMemory", "2GB", ["'2GB'", "512Mi or 2Gi"]),
        ("loggingSamplingRatio", "1.5", ["'1.5'", "at most 1.0"]),
        ("deletionProtection", "maybe", ["'maybe'", "boolean"]),
        ("taskAppImage", "nginx:latest", ["'nginx:latest'", "by digest"]),
        ("maxAttempt", "5", ["maxAttempt", "unknown setting", "did you mean maxAttempts"]),
    ],
)
def test_bad_setting_stops_the_program_before_any_resource(
    key: str, value: str, expected: list[str]
) -> None:
    """Each bad value is refused with a message naming the key,
    the value and the rule, as a RunError (the CLI prints it without a traceback), and
    nothing at all was declared or called."""
    error = failure({KEY + key: value})
    assert isinstance(error.__cause__, pulumi.RunError)
    message = str(error)
    assert KEY + key in message
    for fragment in expected:
        assert fragment in message
    assert error.run.resources == []
    assert error.run.calls == []


def test_min_backoff_above_max_backoff_is_refused() -> None:
    """A retry policy whose first wait exceeds its longest wait is refused, naming both."""
    message = str(failure({KEY + "minBackoff": "20s", KEY + "maxBackoff": "15s"}))
    assert "minBackoff = '20s'" in message
    assert "maxBackoff ('15s')" in message


def test_every_problem_is_reported_at_once() -> None:
    """A person fixing a stack file sees every problem in one run, not one per attempt."""
    error = failure(
        {
            KEY + "maxDispatchesPerSecond": "800",
            KEY + "workerCpu": "3",
            KEY + "workerMemory": "lots",
            KEY + "queueNmae": "jobs",
        }
    )
    assert str(error).startswith("4 invalid setting(s) in stack dev:")
    for key in ("maxDispatchesPerSecond", "workerCpu", "workerMemory", "queueNmae"):
        assert f"{KEY}{key} = " in str(error)
    assert error.run.resources == []


def test_a_missing_project_is_named() -> None:
    """Without gcp:project nothing can be declared; the message says how to set it."""
    message = str(failure({"gcp:project": None}))
    assert "gcp:project: missing (set it with `pulumi config set gcp:project`)" in message


def test_config_reaches_the_program_as_cli_strings(stack_file: str) -> None:
    """The CLI hands every value over as a string (typed schema or not); the settings
    model accepts them, and Pulumi.yaml's typed defaults arrive as strings too."""
    config = cli_config(stack_file)
    assert all(isinstance(value, str) for value in config.values())
    assert config[KEY + "workerCpu"] == "2"
    assert config[KEY + "deletionProtection"] in {"true", "false"}
    run = run_stack(stack_file)
    assert run.config == config


def test_config_from_the_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The language host may pass config in PULUMI_CONFIG: the program reads it too, so a
    typo there is caught like one in the stack file."""
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({KEY + "workerCPU": "2"}))
    error = failure({})
    assert "cloud-run-tasks:workerCPU = '2': unknown setting; did you mean workerCpu?" in str(error)


@pytest.mark.parametrize("stack_file", STACK_FILES)
def test_promoting_digests_deploys_them_without_building(stack_file: str) -> None:
    """An environment can deploy the exact images another one ran (by digest):
    nothing is built or pushed, no registry token is requested, and the services and the
    outputs carry the given references."""
    refs = {
        "task-app": f"us-docker.pkg.dev/cloud-run-tasks-dev/cloud-run-book/task-app@{DIGEST}",
        "worker": f"us-docker.pkg.dev/cloud-run-tasks-dev/cloud-run-book/worker@{DIGEST}",
    }
    run = run_stack(
        stack_file, {KEY + "taskAppImage": refs["task-app"], KEY + "workerImage": refs["worker"]}
    )
    assert run.of_type(IMAGE) == []
    # No registry token: the one lookup left is the project's number (the worker's URL).
    assert [c.token for c in run.calls] == ["gcp:organizations/getProject:getProject"]
    for name, ref in refs.items():
        assert container(service_named(run, name))["image"] == ref
    assert (run.outputs["taskAppImage"], run.outputs["workerImage"]) == (
        refs["task-app"],
        refs["worker"],
    )


def test_promoting_one_image_still_builds_the_other() -> None:
    """The two image settings are independent: promoting the worker alone builds only the
    task-app."""
    ref = f"us-docker.pkg.dev/cloud-run-tasks-dev/cloud-run-book/worker@{DIGEST}"
    run = run_stack("Pulumi.dev.yaml", {KEY + "workerImage": ref})
    (built,) = run.of_type(IMAGE)
    assert built.inputs["imageName"].endswith("/task-app")
    assert container(service_named(run, "worker"))["image"] == ref
    assert container(service_named(run, "task-app"))["image"] == built.outputs["repoDigest"]


@pytest.mark.parametrize(
    ("cpu", "memory", "allowed"),
    [
        ("1", "4Gi", True),
        ("1", "4097Mi", False),
        ("2", "8Gi", True),
        ("2", "9Gi", False),
        ("4", "16Gi", True),
        ("4", "17Gi", False),
        ("6", "24Gi", True),
        ("6", "25Gi", False),
        ("8", "32Gi", True),
        ("4", "1Gi", False),
    ],
)
def test_memory_is_held_to_what_the_cpus_allow(cpu: str, memory: str, allowed: bool) -> None:
    """Cloud Run's table (components/data/cloud_run_limits.json), at each edge."""
    overrides: dict[str, str | None] = {KEY + "workerCpu": cpu, KEY + "workerMemory": memory}
    if allowed:
        run = run_stack("Pulumi.dev.yaml", overrides)
        limits = container(service_named(run, "worker"))["resources"]["limits"]
        assert limits == {"cpu": cpu, "memory": memory}
    else:
        message = str(failure(overrides))
        assert f"{KEY}workerMemory = {memory!r}" in message
        assert f"{KEY}workerCpu = {cpu}" in message


def test_the_cpu_memory_table_names_its_source() -> None:
    from stack_settings import MEMORY_BY_CPU, cloud_run_limits_source

    assert cloud_run_limits_source().startswith("https://cloud.google.com/run/docs/")
    assert sorted(MEMORY_BY_CPU) == [1, 2, 4, 6, 8]
    assert [MEMORY_BY_CPU[c].max_mib // 1024 for c in (1, 2, 4, 6, 8)] == [4, 8, 16, 24, 32]
