"""The local system gets its queues, their IAM policies and its services' variables from
the stack program itself, so what `make dev` runs cannot drift from what `pulumi up`
declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from local_stack import rendering
from local_stack.plan import TASK_APP, WORKER, build_plan
from stack_review import run_stack
from stack_settings import load_stack_file, stack_files
from tests.e2e.harness import stack_queues
from tests.infra.helpers import env_of, service_named


@pytest.mark.parametrize("stack_file", stack_files(), ids=lambda path: path.name)
def test_every_declared_queue_and_grant_reaches_the_emulator(stack_file: Path) -> None:
    """Each queue resource of the program, with its settings and state, and each queue IAM
    grant, becomes the emulator's queue and its policy."""
    run = run_stack(stack_file)
    queues = {queue["name"]: queue for queue in stack_queues(stack_file)}
    declared = run.of_type(rendering.QUEUE_TYPE)
    assert len(queues) == len(declared) > 0
    for resource in declared:
        name = f"projects/{resource.outputs['project']}/locations/"
        name += f"{resource.inputs['location']}/queues/{resource.inputs['name']}"
        queue = queues[name]
        retry = resource.inputs["retryConfig"]
        assert queue["retryConfig"]["maxAttempts"] == retry["maxAttempts"]
        assert queue["retryConfig"]["minBackoff"] == retry["minBackoff"]
        assert queue["state"] == (resource.inputs.get("desiredState") or "RUNNING")
    grants = {
        (grant.inputs["name"], grant.inputs["role"], grant.inputs["member"])
        for grant in run.of_type(rendering.QUEUE_IAM_MEMBER_TYPE)
    }
    local = {
        (name.rsplit("/", 1)[-1], binding["role"], member)
        for name, queue in queues.items()
        for binding in queue["iamPolicy"]["bindings"]
        for member in binding["members"]
    }
    assert local == grants
    assert grants  # the task-app's enqueuer grant at least


@pytest.mark.parametrize("stack_file", stack_files(), ids=lambda path: path.name)
def test_each_service_gets_every_variable_the_stack_gives_it(stack_file: Path) -> None:
    """Locally a service runs with every environment variable the stack sets for it on
    Cloud Run (values differ only where they are endpoints or the secret)."""
    run = run_stack(stack_file)
    settings = load_stack_file(stack_file)
    plan = build_plan(settings, stack_file, stack_queues(stack_file), state_dir=Path("/s"))
    for part, service in ((TASK_APP, settings.task_app_name), (WORKER, settings.worker_name)):
        declared = set(env_of(service_named(run, service)))
        # The request threads are the server's own default, the same number.
        missing = declared - set(plan[part].env) - {"GUNICORN_THREADS"}
        assert not missing, f"{part} runs locally without {sorted(missing)}"


def test_the_rendering_is_kept_until_an_input_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second start reuses the rendered queues (a mock run costs seconds); changing a file
    the program reads renders again."""
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(Path("Pulumi.dev.yaml").read_text())
    (tmp_path / "Pulumi.yaml").write_text(Path("Pulumi.yaml").read_text())
    runs: list[Path] = []

    def render(path: Path) -> list[rendering.DeclaredQueue]:
        runs.append(path)
        return [rendering.DeclaredQueue("projects/p/locations/l/queues/q", {}, {})]

    monkeypatch.setattr(rendering, "render_queues", render)
    state = tmp_path / "state"
    first = rendering.declared_queues(stack_file, state)
    assert rendering.declared_queues(stack_file, state) == first
    assert len(runs) == 1
    stack_file.write_text(stack_file.read_text() + "  cloud-run-tasks:maxAttempts: 11\n")
    rendering.declared_queues(stack_file, state)
    assert len(runs) == 2
