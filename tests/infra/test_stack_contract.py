"""The stack against the rest of the repository: what it builds exists, and the
environment it gives each service is one that service accepts and reads as intended."""

from __future__ import annotations

from pathlib import Path

import pytest
from service_common import contract, gunicorn_defaults
from task_app.settings import TaskAppSettings
from worker.settings import WorkerSettings

from stack_review import StackRun
from stack_settings import PROJECT_DIR
from tests.infra.helpers import IMAGE, PASSWORD, env_of, service_named


def service_environment(stack: StackRun, name: str) -> dict[str, str]:
    """The service's environment as Cloud Run would set it, secret references resolved to
    the value Secret Manager would hand over."""
    secret = stack.one(PASSWORD).outputs["result"]
    return {
        key: value if isinstance(value, str) else secret
        for key, value in env_of(service_named(stack, name)).items()
    }


def test_build_inputs_exist_in_the_repository(stack: StackRun) -> None:
    """A build pointing at a moved Dockerfile fails only at `pulumi up`: every build
    context and Dockerfile the stack names exists (paths relative to the project, where
    Pulumi runs the program)."""
    for image in stack.of_type(IMAGE):
        build = image.inputs["build"]
        assert (PROJECT_DIR / build["context"]).is_dir()
        dockerfile = Path(build["dockerfile"])
        assert (PROJECT_DIR / dockerfile).is_file()
        assert (
            (PROJECT_DIR / dockerfile)
            .resolve()
            .is_relative_to((PROJECT_DIR / build["context"]).resolve())
        )


def test_task_app_accepts_the_environment_the_stack_gives_it(stack: StackRun) -> None:
    """The variable names and formats the stack sets are the ones task-app reads: it
    starts with them and sends tasks to the worker, to the queue, with the token the stack
    intends."""
    env = service_environment(stack, "task-app")
    settings = TaskAppSettings.from_env(env)
    assert settings.queue == stack.outputs["queueId"]
    assert settings.worker_url == stack.outputs["workerUrl"]
    assert settings.oidc_service_account == stack.outputs["taskAppServiceAccount"]
    assert settings.dispatch_deadline_seconds == 900
    assert settings.secret_key == stack.one(PASSWORD).outputs["result"]
    assert settings.api_endpoint is None  # Google's Cloud Tasks endpoint


def test_the_task_apps_tokens_carry_an_audience_the_worker_accepts(stack: StackRun) -> None:
    """Read by each service from the environment the stack gives it, the audience the
    task-app asks Cloud Tasks to mint tokens for is one the worker accepts: otherwise every
    delivery would be refused with 401."""
    task_app = TaskAppSettings.from_env(service_environment(stack, "task-app"))
    worker = WorkerSettings.from_env(service_environment(stack, "worker"))
    assert task_app.oidc_audience in worker.oidc_audiences
    assert task_app.oidc_audience.startswith("https://")


def test_worker_accepts_the_environment_the_stack_gives_it(stack: StackRun) -> None:
    """The worker verifies tokens (on exactly when OIDC_SERVICE_ACCOUNT is set) and expects
    the task-app's account; its deadline matches its request timeout."""
    settings = WorkerSettings.from_env(service_environment(stack, "worker"))
    assert settings.verify_tokens
    assert settings.oidc_caller_email == stack.outputs["taskAppServiceAccount"]
    assert settings.dispatch_deadline_seconds == 900


def test_request_threads_reach_gunicorn(stack: StackRun, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread count the stack sizes Cloud Run's concurrency by is the one the services'
    gunicorn reads."""
    for name in ("task-app", "worker"):
        environment = service_environment(stack, name)
        monkeypatch.setenv("GUNICORN_THREADS", environment["GUNICORN_THREADS"])
        concurrency = service_named(stack, name).inputs["template"]["maxInstanceRequestConcurrency"]
        assert gunicorn_defaults.thread_count() == concurrency


def test_stack_sets_only_names_of_the_contract(stack: StackRun) -> None:
    """Every variable the stack gives a service is named in service_common.contract under
    its current name (never an earlier one), so the contract is the one list a reader
    checks."""
    current = {variable.name for variable in contract.ALL_VARIABLES}
    earlier = {alias for variable in contract.ALL_VARIABLES for alias in variable.aliases}
    for name in ("task-app", "worker"):
        names = set(env_of(service_named(stack, name)))
        assert names <= current, names - current
        assert not names & earlier


def test_renamed_variables_are_still_read_under_their_earlier_names() -> None:
    """Prod runs the image digests dev ran, so an image can meet the environment of an
    older program: a worker given its caller under the earlier name OIDC_CALLER_EMAIL still
    verifies tokens for exactly that caller."""
    assert "OIDC_CALLER_EMAIL" in contract.OIDC_SERVICE_ACCOUNT.aliases
    audience = {"OIDC_AUDIENCE": "https://worker-1.europe-west1.run.app"}
    settings = WorkerSettings.from_env(
        {"OIDC_CALLER_EMAIL": "old@p.iam.gserviceaccount.com", **audience}
    )
    assert settings.verify_tokens
    assert settings.oidc_caller_email == "old@p.iam.gserviceaccount.com"
    both = {"OIDC_CALLER_EMAIL": "old@p", "OIDC_SERVICE_ACCOUNT": "new@p", **audience}
    assert WorkerSettings.from_env(both).oidc_caller_email == "new@p"
