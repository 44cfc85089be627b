"""The wires between resources: each environment value is the actual output of the
resource it names (equal value AND a recorded dependency on that resource, so a value
recomputed from settings, which would drift from reality, is caught)."""

from __future__ import annotations

import json

import pytest
from service_common.queue_spec import RetryConfig

from stack_review import RecordedResource, StackRun
from stack_review.mocks import GET_PROJECT
from tests.infra.helpers import (
    QUEUE,
    SECRET,
    SECRET_MEMBER,
    SECRET_VERSION,
    account_named,
    env_of,
    service_named,
)


def assert_wired(
    consumer: RecordedResource, value: object, source: RecordedResource, output: object
) -> None:
    assert value == output
    assert source.urn in consumer.property_dependencies["template"], (
        f"{consumer.name}'s template does not come from {source.urn}"
    )


def test_queue_env_is_the_queue_actual_id(stack: StackRun) -> None:
    """QUEUE is the queue's full id as the provider reports it."""
    task_app, queue = service_named(stack, "task-app"), stack.one(QUEUE, name="jobs")
    assert queue.id.startswith("projects/")
    assert queue.id.endswith("/queues/jobs")
    assert_wired(task_app, env_of(task_app)["QUEUE"], queue, queue.id)


def test_worker_url_env_is_the_worker_actual_uri(stack: StackRun) -> None:
    """WORKER_URL is the worker's URL as Cloud Run reports it (tasks POST to it and
    the OIDC audience is it)."""
    task_app, worker = service_named(stack, "task-app"), service_named(stack, "worker")
    assert_wired(task_app, env_of(task_app)["WORKER_URL"], worker, worker.outputs["uri"])
    assert env_of(task_app)["WORKER_URL"] != task_app.outputs["uri"]


@pytest.mark.parametrize(
    ("service", "variable"),
    [("task-app", "OIDC_SERVICE_ACCOUNT"), ("worker", "OIDC_SERVICE_ACCOUNT")],
)
def test_oidc_email_is_the_task_app_account_email(
    stack: StackRun, service: str, variable: str
) -> None:
    """Tasks carry a token for the task-app's account, and the worker accepts
    exactly that caller: both are the account's actual email."""
    consumer, account = service_named(stack, service), account_named(stack, "task-app")
    assert_wired(consumer, env_of(consumer)[variable], account, account.outputs["email"])


@pytest.mark.parametrize("service", ["task-app", "worker"])
def test_dispatch_deadline_is_the_worker_timeout(stack: StackRun, service: str) -> None:
    """One setting, two uses: a task's dispatch deadline is the worker's request
    timeout, so Cloud Tasks never gives up on a request the worker still runs."""
    timeout = service_named(stack, "worker").inputs["template"]["timeout"]
    assert env_of(service_named(stack, service))["DISPATCH_DEADLINE_SECONDS"] == (
        timeout.removesuffix("s")
    )


def test_secret_key_references_the_generated_secret(stack: StackRun) -> None:
    """The task-app's SECRET_KEY is a reference to the stack's secret and its current
    version, and the service waits for its account's read grant (without it, the new
    revision fails to start)."""
    task_app = service_named(stack, "task-app")
    secret, version = stack.one(SECRET), stack.one(SECRET_VERSION)
    reference = env_of(task_app)["SECRET_KEY"]["secretKeyRef"]
    assert_wired(task_app, reference["secret"], secret, secret.outputs["secretId"])
    assert_wired(task_app, reference["version"], version, version.outputs["version"])
    assert stack.one(SECRET_MEMBER).urn in task_app.dependencies


def test_task_app_environment_is_complete(stack: StackRun) -> None:
    """The task-app gets exactly the variables its contract requires, no leftovers."""
    assert set(env_of(service_named(stack, "task-app"))) == {
        "QUEUE",
        "WORKER_URL",
        "OIDC_SERVICE_ACCOUNT",
        "DISPATCH_DEADLINE_SECONDS",
        "SECRET_KEY",
        "GUNICORN_THREADS",
        "QUEUE_RETRY_CONFIG",
        "DEAD_LETTER_QUEUE",
        "OIDC_AUDIENCE",
    }
    assert set(env_of(service_named(stack, "worker"))) == {
        "OIDC_SERVICE_ACCOUNT",
        "OIDC_AUDIENCE",
        "DISPATCH_DEADLINE_SECONDS",
        "GUNICORN_THREADS",
        "QUEUE_RETRY_CONFIG",
        "DEAD_LETTER_QUEUE",
    }


@pytest.mark.parametrize("service", ["task-app", "worker"])
def test_dead_letter_queue_env_is_the_paused_queue_actual_id(stack: StackRun, service: str) -> None:
    consumer, dead = service_named(stack, service), stack.one(QUEUE, name="jobs-dead")
    assert dead.id.endswith("/queues/jobs-dead")
    assert_wired(consumer, env_of(consumer)["DEAD_LETTER_QUEUE"], dead, dead.id)


@pytest.mark.parametrize("service", ["task-app", "worker"])
def test_retry_config_env_is_the_queue_retry_config_as_the_api_writes_it(
    stack: StackRun, service: str
) -> None:
    """What the services judge attempts by is what the queue was given, field for field."""
    queue = stack.one(QUEUE, name="jobs")
    handed = json.loads(env_of(service_named(stack, service))["QUEUE_RETRY_CONFIG"])
    declared = {
        key: int(value) if isinstance(value, float) else value
        for key, value in queue.inputs["retryConfig"].items()
    }
    assert handed == declared
    assert RetryConfig.from_api(handed) == RetryConfig.from_api(declared)


@pytest.mark.parametrize("service", ["task-app", "worker"])
def test_cloud_run_sends_no_more_requests_than_the_container_serves(
    stack: StackRun, service: str
) -> None:
    """Cloud Run's per-instance concurrency equals the container's request threads: more
    would queue requests inside the container, where a long task can make the ones behind
    it miss their dispatch deadline."""
    resource = service_named(stack, service)
    threads = int(env_of(resource)["GUNICORN_THREADS"])
    assert resource.inputs["template"]["maxInstanceRequestConcurrency"] == threads


def test_the_audience_is_the_workers_deterministic_url_without_a_cycle(stack: StackRun) -> None:
    """The worker accepts, and the task-app asks for, one audience: the worker's
    deterministic URL (name, project NUMBER, region), which Cloud Run serves beside `uri`.
    It comes from the project lookup, not from the worker, so the worker can be told it."""
    worker, task_app = service_named(stack, "worker"), service_named(stack, "task-app")
    [lookup] = [c for c in stack.calls if c.token == GET_PROJECT]
    assert lookup.args["projectId"] == stack.config["gcp:project"]
    number = lookup.result["number"]
    region = worker.inputs["location"]
    audience = f"https://{worker.inputs['name']}-{number}.{region}.run.app"
    assert env_of(worker)["OIDC_AUDIENCE"] == env_of(task_app)["OIDC_AUDIENCE"] == audience
    assert audience in worker.outputs["urls"]  # Cloud Run answers there
    assert audience.startswith("https://")
    assert stack.outputs["workerAudience"] == audience
    services = {s.urn for s in stack.of_type("gcp:cloudrunv2/service:Service")}
    assert not services & set(worker.dependencies)
