"""The offline preflight: every committed stack fits Google's schemas and limits, and a
value Google would refuse, planted in a real run's record, is reported with its resource,
field, value and what Google allows."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Callable
from typing import Any

import pytest

from preflight import Problem, check_run, check_stack, discovery
from preflight.__main__ import main
from preflight.check import rules_data
from preflight.mapping import MAPPINGS, NOT_GOOGLE_APIS
from stack_review import RecordedResource, StackRun, run_stack
from stack_review.manifest import committed_stacks

STACKS = committed_stacks()
SERVICE = "gcp:cloudrunv2/service:Service"
QUEUE = "gcp:cloudtasks/queue:Queue"


@functools.cache
def _run(stack: str) -> StackRun:
    return run_stack(f"Pulumi.{stack}.yaml")


def planted(stack: str, change: Callable[[StackRun], None]) -> list[Problem]:
    """The problems of a copy of the stack's run after ``change`` altered its record."""
    run = copy.deepcopy(_run(stack))
    change(run)
    return check_run(run)


def resource(run: StackRun, typ: str, name: str) -> RecordedResource:
    return next(r for r in run.resources if r.type == typ and r.name == name)


def worker_container(run: StackRun) -> dict[str, Any]:
    return dict(resource(run, SERVICE, "worker-service").inputs["template"]["containers"][0])


def queue(run: StackRun) -> dict[str, Any]:
    return resource(run, QUEUE, "jobs-queue").inputs


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, "\n".join(p.render() for p in problems)
    return problems[0]


@pytest.mark.parametrize("stack", STACKS)
def test_every_committed_stack_passes(stack: str) -> None:
    assert check_stack(stack) == []


@pytest.mark.parametrize("stack", STACKS)
def test_every_resource_type_is_mapped_to_its_api(stack: str) -> None:
    types = {r.type for r in _run(stack).resources if r.custom}
    assert types - set(MAPPINGS) - NOT_GOOGLE_APIS == set()
    assert {MAPPINGS[t].api for t in types if t in MAPPINGS} == {
        "run.v2",
        "cloudtasks.v2",
        "artifactregistry.v1",
        "iam.v1",
        "secretmanager.v1",
        "serviceusage.v1",
    }


# Each setting at the ends of what the settings model accepts (README's "Allowed").
EXTREMES: dict[str, dict[str, Any]] = {
    "queue at its limits": {
        "maxDispatchesPerSecond": "500",
        "maxConcurrentDispatches": 5000,
        "maxAttempts": -1,
        "loggingSamplingRatio": "1.0",
        "queueName": "q" * 95,  # its dead-letter queue's name is then 100 characters
    },
    "slowest queue": {
        "maxDispatchesPerSecond": "0.001",
        "maxConcurrentDispatches": 1,
        "maxAttempts": 1,
        "minBackoff": "0s",
        "maxBackoff": "0s",
        "loggingSamplingRatio": "0.001",
    },
    "longest names": {"taskAppName": "t" * 30, "workerName": "w" * 30},
    "shortest names": {"taskAppName": "tasker", "workerName": "worker"},
    "largest services": {
        "workerCpu": 8,
        "workerMemory": "32Gi",
        "workerTimeout": "1800s",
        "workerMinInstances": 1000,
        "workerMaxInstances": 1000,
        "taskAppMaxInstances": 1000,
        "keepImageVersions": 1000,
    },
    "smallest services": {
        "workerCpu": 1,
        "workerMemory": "128Mi",
        "workerTimeout": "15s",
        "workerMaxInstances": 1,
        "keepImageVersions": 1,
    },
    "4 CPUs at their least memory": {"workerCpu": 4, "workerMemory": "2Gi"},
}


@pytest.mark.parametrize("settings", EXTREMES.values(), ids=EXTREMES.keys())
def test_what_the_settings_accept_google_accepts(settings: dict[str, Any]) -> None:
    """The settings model refuses before Google would: at the ends of every range it
    allows, the program still declares only values Google takes."""
    run = run_stack(
        "Pulumi.dev.yaml", {f"cloud-run-tasks:{key}": value for key, value in settings.items()}
    )
    assert check_run(run) == []


def test_a_wrong_enum_is_caught() -> None:
    def change(run: StackRun) -> None:
        resource(run, SERVICE, "worker-service").inputs["ingress"] = "INGRESS_TRAFFIC_PUBLIC"

    problem = only(planted("dev", change))
    assert (problem.stack, problem.resource, problem.type) == ("dev", "worker-service", SERVICE)
    assert problem.field == "ingress"
    assert problem.value == "'INGRESS_TRAFFIC_PUBLIC'"
    assert "INGRESS_TRAFFIC_INTERNAL_ONLY" in problem.allowed
    assert "run.v2" in problem.source
    assert "GoogleCloudRunV2Service.ingress" in problem.source


def test_a_wrong_enum_deep_in_a_reshaped_list_is_caught() -> None:
    """Cleanup policies are a list in Pulumi and a map keyed by id in the API."""

    def change(run: StackRun) -> None:
        repo = resource(run, "gcp:artifactregistry/repository:Repository", "registry-repository")
        repo.inputs["cleanupPolicies"][1]["condition"]["tagState"] = "SOMETIMES"

    problem = only(planted("prod", change))
    assert problem.field == "cleanupPolicies[1].condition.tagState"
    assert "UNTAGGED" in problem.allowed


@pytest.mark.parametrize("value", ["15 s", "15", "1m", "15S", "PT15S"])
def test_a_bad_duration_is_caught(value: str) -> None:
    def change(run: StackRun) -> None:
        queue(run)["retryConfig"]["maxBackoff"] = value

    problem = only(planted("dev", change))
    assert problem.field == "retryConfig.maxBackoff"
    assert problem.value == repr(value)
    assert "'15s'" in problem.allowed
    assert "google-duration" not in problem.allowed  # says it in words, not the format's name


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("rateLimits.maxDispatchesPerSecond", 501, "at most 500"),
        ("rateLimits.maxConcurrentDispatches", 5001, "at most 5000"),
        ("retryConfig.maxAttempts", -2, "at least -1"),
        (
            "retryConfig.maxDoublings",
            2**31,
            "a whole number from -2147483648 to 2147483647 (int32)",
        ),
        ("retryConfig.maxDoublings", 2.5, "a whole number from -2147483648 to 2147483647 (int32)"),
        ("stackdriverLoggingConfig.samplingRatio", 1.5, "from 0 to 1"),
    ],
)
def test_a_value_outside_a_documented_range_is_caught(field: str, value: Any, allowed: str) -> None:
    group, key = field.split(".")

    def change(run: StackRun) -> None:
        queue(run).setdefault(group, {})[key] = value

    problem = only(planted("dev", change))
    assert (problem.field, problem.allowed) == (field, allowed)


@pytest.mark.parametrize(
    ("field", "value"),
    [("rateLimits.maxDispatchesPerSecond", 500), ("retryConfig.maxAttempts", -1)],
)
def test_the_bounds_themselves_pass(field: str, value: Any) -> None:
    group, key = field.split(".")

    def change(run: StackRun) -> None:
        queue(run)[group][key] = value

    assert planted("dev", change) == []


def test_min_backoff_above_max_backoff_is_caught() -> None:
    def change(run: StackRun) -> None:
        queue(run)["retryConfig"].update(minBackoff="30s", maxBackoff="15s")

    problem = only(planted("dev", change))
    assert problem.field == "retryConfig.minBackoff"
    assert "at most maxBackoff" in problem.allowed


def test_an_output_only_field_is_caught() -> None:
    def change(run: StackRun) -> None:
        queue(run)["rateLimits"]["maxBurstSize"] = 10

    problem = only(planted("dev", change))
    assert problem.field == "rateLimits.maxBurstSize"
    assert "ignores what is sent" in problem.allowed
    assert "Output only" in problem.source


def test_a_field_the_api_does_not_have_is_caught() -> None:
    def change(run: StackRun) -> None:
        worker_container(run)["startupProbe"]["periodSecond"] = 3

    problem = only(planted("dev", change))
    assert problem.field == "template.containers[0].startupProbe.periodSecond"
    assert "periodSeconds" in problem.allowed


@pytest.mark.parametrize(
    ("cpu", "memory", "allowed"),
    [
        ("2", "10Gi", "at most 8Gi of memory with 2 CPU"),
        ("4", "1Gi", "from 2Gi to 16Gi of memory with 4 CPU"),
        ("3", "2Gi", "1, 2, 4, 6, 8 CPUs"),
        ("0.5", "2Gi", "more than 1Gi only with at least 1 CPU"),
        ("2", "64Gi", "from 128Mi to 32Gi"),
        ("2", "2 GB", "a size such as 512Mi"),
    ],
)
def test_cloud_run_cpu_and_memory_limits(cpu: str, memory: str, allowed: str) -> None:
    def change(run: StackRun) -> None:
        worker_container(run)["resources"]["limits"] = {"cpu": cpu, "memory": memory}
        if float(cpu) < 1:
            resource(run, SERVICE, "worker-service").inputs["template"][
                "maxInstanceRequestConcurrency"
            ] = 1

    problem = only(planted("dev", change))
    assert problem.field.startswith("template.containers[0].resources.limits.")
    assert allowed in problem.allowed
    assert problem.source.startswith("https://cloud.google.com/run/docs/configuring/services/")


@pytest.mark.parametrize(
    ("cpu", "memory"), [("2", "8Gi"), ("1", "4Gi"), ("4", "2Gi"), ("0.5", "1Gi")]
)
def test_cloud_run_sizes_google_allows_pass(cpu: str, memory: str) -> None:
    def change(run: StackRun) -> None:
        worker_container(run)["resources"]["limits"] = {"cpu": cpu, "memory": memory}
        if float(cpu) < 1:
            resource(run, SERVICE, "worker-service").inputs["template"][
                "maxInstanceRequestConcurrency"
            ] = 1

    assert planted("dev", change) == []


def test_less_than_one_cpu_needs_a_concurrency_of_one() -> None:
    def change(run: StackRun) -> None:
        worker_container(run)["resources"]["limits"] = {"cpu": "0.5", "memory": "512Mi"}

    problem = only(planted("dev", change))
    assert problem.field == "template.maxInstanceRequestConcurrency"


def test_a_startup_probe_is_held_to_its_own_maximum() -> None:
    def change(run: StackRun) -> None:
        worker_container(run)["startupProbe"]["periodSeconds"] = 300

    problem = only(planted("dev", change))
    assert problem.allowed == "from 1 to 240"


def test_a_request_timeout_above_an_hour_is_caught() -> None:
    def change(run: StackRun) -> None:
        resource(run, SERVICE, "worker-service").inputs["template"]["timeout"] = "3601s"

    assert only(planted("dev", change)).allowed == "at most 3600s"


def test_the_dispatch_deadline_the_app_sends_is_held_to_cloud_tasks_limits() -> None:
    def change(run: StackRun) -> None:
        for env in worker_container(run)["envs"]:
            if env["name"] == "DISPATCH_DEADLINE_SECONDS":
                env["value"] = "10"

    problem = only(planted("dev", change))
    assert "DISPATCH_DEADLINE_SECONDS" in problem.field
    assert "Task.dispatchDeadline" in problem.field
    assert problem.allowed == "from 15s to 1800s"


def test_an_email_where_the_account_name_belongs_is_caught() -> None:
    """serviceAccountId takes the account's resource name: an email addresses nothing."""

    def change(run: StackRun) -> None:
        member = resource(run, "gcp:serviceaccount/iAMMember:IAMMember", "task-app-sa-user-self")
        member.inputs["serviceAccountId"] = member.inputs["serviceAccountId"].rsplit("/", 1)[1]

    problem = only(planted("dev", change))
    assert problem.field == "serviceAccountId"
    assert problem.allowed == "a resource name matching ^projects/[^/]+/serviceAccounts/[^/]+$"


def test_a_member_without_its_kind_and_a_bad_queue_id_are_caught() -> None:
    def change(run: StackRun) -> None:
        member = resource(
            run, "gcp:cloudtasks/queueIamMember:QueueIamMember", "jobs-enqueuer-task-app"
        )
        member.inputs["member"] = member.inputs["member"].removeprefix("serviceAccount:")
        queue(run)["name"] = "jobs_queue"

    problems = planted("dev", change)
    assert sorted(p.field for p in problems) == ["member", "name"]


def test_a_secret_value_is_never_printed() -> None:
    def change(run: StackRun) -> None:
        version = resource(
            run, "gcp:secretmanager/secretVersion:SecretVersion", "task-app-secret-key-version"
        )
        version.inputs["secretData"] = "s3cr3t" * 11000

    problem = only(planted("dev", change))
    assert problem.value == "[secret]"
    assert "s3cr3t" not in problem.render()
    assert problem.allowed == "at most 65536 bytes"


def test_a_resource_type_without_a_map_is_reported() -> None:
    def change(run: StackRun) -> None:
        extra = copy.deepcopy(resource(run, QUEUE, "jobs-queue"))
        extra.type, extra.name = "gcp:pubsub/topic:Topic", "events"
        run.resources.append(extra)

    problem = only(planted("dev", change))
    assert (problem.resource, problem.value) == ("events", "gcp:pubsub/topic:Topic")


# ---- the data the checks read ------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    return list(rules_data()["rules"]) + list(rules_data()["relations"])


@pytest.mark.parametrize("rule", _rules(), ids=lambda r: str(r["at"]))
def test_every_rule_names_a_real_place_and_cites_its_source(rule: dict[str, Any]) -> None:
    places = rule["at"] if isinstance(rule["at"], list) else [rule["at"]]
    for place in places:
        api, _, target = place.partition(":")
        if target.startswith("id:"):
            continue
        if "." in target:
            discovery.field(api, target)
        else:
            discovery.schema(api, target)
    source = rule["source"]
    if "url" in source:
        assert re.fullmatch(r"https://cloud\.google\.com/\S+", source["url"])
    else:
        api, _, where = source["discovery"].partition(":")
        # Still what Google's document says: a changed description fails here first.
        assert source["quote"] in discovery.description(api, where)


def test_make_preflight_passes_on_committed_stacks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for stack in STACKS:
        assert f"{stack}: every declared value fits" in out


def test_make_preflight_prints_each_problem_and_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def change(run: StackRun) -> None:
        resource(run, SERVICE, "task-app-service").inputs["ingress"] = "PUBLIC"

    problems = planted("prod", change)
    monkeypatch.setattr("preflight.__main__.check_stack", lambda stack: problems)
    assert main(["--stack", "prod"]) == 1
    out = capsys.readouterr().out
    assert "prod: task-app-service (gcp:cloudrunv2/service:Service)" in out
    assert "ingress = 'PUBLIC'" in out
    assert "Google allows: one of INGRESS_TRAFFIC_UNSPECIFIED, INGRESS_TRAFFIC_ALL" in out
    assert "1 value(s) Google would refuse or ignore" in out
