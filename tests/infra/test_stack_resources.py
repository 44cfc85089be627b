"""What the stack declares, resource by resource, for every
committed Pulumi.<stack>.yaml, asserted on the inputs the program really registered."""

from __future__ import annotations

import pytest
from service_common.queue_spec import format_duration

from stack_review import StackRun
from stack_settings import StackSettings
from tests.infra.helpers import (
    ACCOUNT,
    API,
    IMAGE,
    QUEUE,
    REPOSITORY,
    SERVICE,
    STACK_FILES,
    account_named,
    committed_run,
    container,
    env_of,
    service_named,
)

APIS = {
    "run.googleapis.com",
    "cloudtasks.googleapis.com",
    "artifactregistry.googleapis.com",
    "iam.googleapis.com",
    "secretmanager.googleapis.com",
}


def test_every_environment_has_a_committed_stack_file() -> None:
    """The suite runs once per committed stack: dev and prod must both be among them, or
    an environment would ship untested."""
    assert {"Pulumi.dev.yaml", "Pulumi.prod.yaml"} <= set(STACK_FILES)


def test_apis_enabled_and_left_enabled_on_destroy(stack: StackRun, settings: StackSettings) -> None:
    """Every API the system needs is enabled by the stack (no manual gcloud step),
    and destroying the stack does not disable an API other workloads may use."""
    apis = stack.of_type(API)
    assert {api.inputs["service"] for api in apis} == APIS
    for api in apis:
        assert api.inputs["disableOnDestroy"] is False
        assert api.inputs["project"] == settings.project


@pytest.mark.parametrize(
    ("resource_type", "match", "api"),
    [
        (QUEUE, {"name": "jobs"}, "cloudtasks.googleapis.com"),
        (QUEUE, {"name": "jobs-dead"}, "cloudtasks.googleapis.com"),
        (SERVICE, {"name": "task-app"}, "run.googleapis.com"),
        (SERVICE, {"name": "worker"}, "run.googleapis.com"),
        (REPOSITORY, {}, "artifactregistry.googleapis.com"),
        (ACCOUNT, {"accountId": "task-app"}, "iam.googleapis.com"),
        (ACCOUNT, {"accountId": "worker"}, "iam.googleapis.com"),
        ("gcp:secretmanager/secret:Secret", {}, "secretmanager.googleapis.com"),
    ],
)
def test_resources_wait_for_their_api(
    stack: StackRun, resource_type: str, match: dict[str, str], api: str
) -> None:
    """On a fresh project, creating a resource before its API is enabled fails;
    each resource must depend on its API."""
    api_resource = stack.one(API, service=api)
    assert api_resource.urn in stack.one(resource_type, **match).dependencies


def test_registry_is_a_docker_repository_with_cleanup(
    stack: StackRun, settings: StackSettings
) -> None:
    """Repository `cloud-run-book` in `us`, Docker format, and a cleanup policy so
    one image per deploy does not grow the registry forever."""
    repository = stack.one(REPOSITORY)
    assert repository.inputs["repositoryId"] == settings.repository_name == "cloud-run-book"
    assert repository.inputs["location"] == settings.registry_location == "us"
    assert repository.inputs["format"] == "DOCKER"
    assert repository.inputs["cleanupPolicyDryRun"] is False
    policies = {p["id"]: p for p in repository.inputs["cleanupPolicies"]}
    assert policies["keep-recent"]["action"] == "KEEP"
    assert policies["keep-recent"]["mostRecentVersions"]["keepCount"] == (
        settings.keep_image_versions
    )
    assert policies["delete-old"]["action"] == "DELETE"
    assert policies["delete-old"]["condition"]["olderThan"] == "2592000s"
    # Images another environment runs by digest are tagged prod-* and kept whatever
    # their age (a version matching a KEEP and a DELETE rule is kept).
    assert policies["keep-promoted"]["action"] == "KEEP"
    assert policies["keep-promoted"]["condition"] == {
        "tagState": "TAGGED",
        "tagPrefixes": ["prod-"],
    }


@pytest.mark.parametrize(
    ("image", "dockerfile"),
    [("task-app", "app/task_app/Dockerfile"), ("worker", "app/worker/Dockerfile")],
)
def test_images_built_for_cloud_run_and_pushed_to_the_registry(
    stack: StackRun, image: str, dockerfile: str
) -> None:
    """Each image is built from app/ for linux/amd64 and pushed to
    us-docker.pkg.dev/PROJECT/cloud-run-book/<name>, logging in with the deploying identity's
    own access token from the gcp provider (no stored key)."""
    repository = stack.one(REPOSITORY)
    built = stack.one(IMAGE, imageName=f"{repository.outputs['registryUri']}/{image}")
    assert built.inputs["imageName"].startswith("us-docker.pkg.dev/")
    assert built.inputs["build"] == {
        "context": "app",
        "dockerfile": dockerfile,
        "platform": "linux/amd64",
    }
    (client_config,) = [c for c in stack.calls if c.token.endswith("getClientConfig")]
    registry = built.inputs["registry"]
    assert registry["server"] == "us-docker.pkg.dev"
    assert registry["username"] == "oauth2accesstoken"
    assert registry["password"] == client_config.result["accessToken"]
    assert "registry" in built.secret_paths, "the access token must stay a secret"
    assert repository.urn in built.dependencies


@pytest.mark.parametrize("name", ["task-app", "worker"])
def test_services_deploy_their_image_by_digest(stack: StackRun, name: str) -> None:
    """Cloud Run runs the pushed image's digest, so a changed image always rolls a
    new revision (a tag would not)."""
    built = stack.one(IMAGE, imageName=stack.one(REPOSITORY).outputs["registryUri"] + f"/{name}")
    image = container(service_named(stack, name))["image"]
    assert image == built.outputs["repoDigest"]
    assert "@sha256:" in image


@pytest.mark.parametrize("name", ["task-app", "worker"])
def test_each_service_runs_as_its_own_account(stack: StackRun, name: str) -> None:
    """Items 4-6: service accounts `task-app` and `worker`, each service running as its
    own, so that grants can tell the two apart."""
    account = account_named(stack, name)
    service = service_named(stack, name)
    assert service.inputs["template"]["serviceAccount"] == account.outputs["email"]


def test_worker_service(stack: StackRun, settings: StackSettings) -> None:
    """The worker has the chapter's 900 s timeout, 2 CPU and 2 GiB, internal
    ingress (Cloud Tasks of the project reaches it, the internet does not), a health probe,
    request-only CPU stated explicitly, and instance bounds from the settings."""
    worker = service_named(stack, "worker")
    template = worker.inputs["template"]
    assert template["timeout"] == "900s" == format_duration(settings.worker_timeout)
    assert worker.inputs["ingress"] == "INGRESS_TRAFFIC_INTERNAL_ONLY"
    resources = container(worker)["resources"]
    assert resources["limits"] == {"cpu": "2", "memory": "2Gi"}
    assert resources["cpuIdle"] is True
    assert container(worker)["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert template["scaling"] == {
        "minInstanceCount": settings.worker_min_instances,
        "maxInstanceCount": settings.worker_max_instances,
    }
    assert worker.inputs["location"] == settings.region == "us-central1"


def test_task_app_service(stack: StackRun, settings: StackSettings) -> None:
    """The task-app takes traffic from anywhere, has a health probe, explicit
    request-only CPU, and its instance bound from the settings."""
    task_app = service_named(stack, "task-app")
    assert task_app.inputs["ingress"] == "INGRESS_TRAFFIC_ALL"
    assert container(task_app)["resources"]["cpuIdle"] is True
    assert container(task_app)["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert task_app.inputs["template"]["scaling"]["maxInstanceCount"] == (
        settings.task_app_max_instances
    )


def test_queue_has_the_stack_rate_limits_and_retry_config(
    stack: StackRun, settings: StackSettings
) -> None:
    """Queue `jobs` in us-central1 with the stack's rate limits and retry config
    (durations as strings), without the output-only max_burst_size, and queue logging
    exactly when a sampling ratio is set."""
    queue = stack.one(QUEUE, name="jobs")
    assert queue.inputs["name"] == "jobs"
    assert queue.inputs["location"] == "us-central1"
    assert queue.inputs["project"] == settings.project
    assert queue.inputs["rateLimits"] == {
        "maxDispatchesPerSecond": settings.max_dispatches_per_second,
        "maxConcurrentDispatches": settings.max_concurrent_dispatches,
    }
    assert queue.inputs["retryConfig"] == {
        "maxAttempts": settings.max_attempts,
        "minBackoff": format_duration(settings.min_backoff),
        "maxBackoff": format_duration(settings.max_backoff),
        "maxDoublings": settings.max_doublings,
        "maxRetryDuration": format_duration(settings.max_retry_duration),
    }
    logging = queue.inputs.get("stackdriverLoggingConfig")
    if settings.logging_sampling_ratio is None:
        assert logging is None
    else:
        assert logging == {"samplingRatio": settings.logging_sampling_ratio}


def test_worker_can_take_every_concurrent_dispatch_of_the_queue(stack: StackRun) -> None:
    """The queue may have max_concurrent_dispatches tasks in flight; if the worker's
    instances cannot hold them all, Cloud Run answers 429 and good tasks burn attempts on
    backoff. So max instances x requests per instance covers the queue's concurrency."""
    worker = service_named(stack, "worker")
    template = worker.inputs["template"]
    capacity = template["scaling"]["maxInstanceCount"] * template["maxInstanceRequestConcurrency"]
    in_flight = stack.one(QUEUE, name="jobs").inputs["rateLimits"]["maxConcurrentDispatches"]
    assert capacity >= in_flight, f"worker holds {capacity} requests, queue sends {in_flight}"


def test_dev_queue_uses_the_chapter_tuned_values() -> None:
    """Dev runs the chapter's tuned queue, literally: 100/s, 100 concurrent,
    10 attempts, backoff 1 s to 15 s, 3 doublings."""
    queue = committed_run("Pulumi.dev.yaml").one(QUEUE, name="jobs")
    assert queue.inputs["rateLimits"] == {
        "maxDispatchesPerSecond": 100,
        "maxConcurrentDispatches": 100,
    }
    retry = queue.inputs["retryConfig"]
    assert (retry["maxAttempts"], retry["minBackoff"], retry["maxBackoff"]) == (10, "1s", "15s")
    assert retry["maxDoublings"] == 3


def test_prod_queue_logs_a_sample_of_attempts() -> None:
    """The optional logging sampling ratio reaches the queue (prod sets 0.1)."""
    queue = committed_run("Pulumi.prod.yaml").one(QUEUE, name="jobs")
    assert queue.inputs["stackdriverLoggingConfig"] == {"samplingRatio": 0.1}


@pytest.mark.parametrize(
    ("stack_file", "protected"), [("Pulumi.dev.yaml", False), ("Pulumi.prod.yaml", True)]
)
def test_deletion_protection_per_environment(stack_file: str, protected: bool) -> None:
    """Dev can be torn down; in prod, deleting a service, the queue (whose name
    would then be unusable for about 7 days) or the session-key secret fails."""
    run = committed_run(stack_file)
    for name in ("task-app", "worker"):
        assert service_named(run, name).inputs["deletionProtection"] is protected
    for queue in run.of_type(QUEUE):
        assert queue.inputs["deletionPolicy"] == ("PREVENT" if protected else "DELETE")
    assert run.one("gcp:secretmanager/secret:Secret").inputs["deletionProtection"] is protected


def test_outputs_are_the_resources_actual_values(stack: StackRun) -> None:
    """The stack exports the task-app URL, the worker URL, the queue id, both
    account emails and the deployed image digests, each the provider's actual value."""
    images = {
        image.inputs["imageName"].rsplit("/", 1)[-1]: image.outputs["repoDigest"]
        for image in stack.of_type(IMAGE)
    }
    assert stack.outputs == {
        "taskAppUrl": service_named(stack, "task-app").outputs["uri"],
        "workerUrl": service_named(stack, "worker").outputs["uri"],
        "workerAudience": env_of(service_named(stack, "worker"))["OIDC_AUDIENCE"],
        "queueId": stack.one(QUEUE, name="jobs").id,
        "deadLetterQueueId": stack.one(QUEUE, name="jobs-dead").id,
        "taskAppServiceAccount": account_named(stack, "task-app").outputs["email"],
        "workerServiceAccount": account_named(stack, "worker").outputs["email"],
        "taskAppImage": images["task-app"],
        "workerImage": images["worker"],
    }


def test_every_resource_belongs_to_a_component(stack: StackRun) -> None:
    """Design: every cloud resource is a child of one of the project's components, named
    after it, so the stack reads as its architecture."""
    components = {r.urn: r for r in stack.resources if not r.custom}
    assert all(c.type.startswith("cloud-run-tasks:") for c in components.values())
    for resource in stack.resources:
        if resource.custom and not resource.type.startswith("pulumi:providers:"):
            parent = components.get(resource.parent)
            assert parent is not None, f"{resource.urn} is not in a component"
            assert resource.name.startswith(parent.name), resource.urn


def test_dead_letter_queue_is_paused_with_the_live_queue_settings(
    stack: StackRun, settings: StackSettings
) -> None:
    """The dead-letter queue keeps its tasks and never dispatches them (PAUSED); if a
    person resumes it, it is as gentle with the worker as the live queue."""
    live, dead = stack.one(QUEUE, name="jobs"), stack.one(QUEUE, name="jobs-dead")
    assert settings.dead_letter_queue_name == "jobs-dead"
    assert dead.inputs["desiredState"] == "PAUSED"
    assert dead.outputs["state"] == "PAUSED"
    assert "desiredState" not in live.inputs
    for key in ("rateLimits", "retryConfig", "location", "project", "deletionPolicy"):
        assert dead.inputs[key] == live.inputs[key], key
