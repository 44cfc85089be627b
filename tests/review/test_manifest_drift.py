"""The reviewed manifests (stack_review/manifests/<stack>.txt) match what the program
declares, and say what a reviewer needs: access, policy results, resources, outputs.

A pull request that changes the infrastructure must carry the regenerated manifest, so the
change shows as a plain-text diff; these tests fail with that diff when it does not.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import pytest

from stack_review import run_stack
from stack_review.__main__ import main, manifest_diff, text_diff
from stack_review.manifest import (
    committed_stacks,
    manifest_path,
    render,
    stale_manifests,
)
from stack_settings import PROJECT_DIR, load_stack_file

STACKS = committed_stacks()
DIGEST = "sha256:" + "ab" * 32


@functools.cache
def generated(stack: str) -> str:
    return render(run_stack(PROJECT_DIR / f"Pulumi.{stack}.yaml"))


@pytest.mark.parametrize("stack", STACKS)
def test_committed_manifest_matches_the_program(stack: str) -> None:
    """Drift: the committed manifest is exactly what the program declares now; otherwise
    the failure shows the diff and the command that regenerates it."""
    diff = manifest_diff(stack, generated(stack))
    if diff:
        pytest.fail(
            f"stack_review/manifests/{stack}.txt is out of date. Run `make manifest` and "
            f"commit it with your change. What changed:\n{diff}",
            pytrace=False,
        )


def test_every_stack_has_a_manifest_and_no_manifest_is_orphaned() -> None:
    """Each committed Pulumi.<stack>.yaml has its manifest, and none outlives its stack."""
    assert STACKS, "no Pulumi.<stack>.yaml found"
    assert [s for s in STACKS if not manifest_path(s).exists()] == []
    assert stale_manifests() == []


def test_changed_setting_shows_as_a_readable_diff() -> None:
    """Review value: changing one stack value changes only the lines that show it (both
    queues' retry config, the services' copy of it and the retry plan), each as -old/+new."""
    attempts = load_stack_file("Pulumi.dev.yaml").max_attempts
    changed = render(
        run_stack("Pulumi.dev.yaml", overrides={"cloud-run-tasks:maxAttempts": attempts + 1})
    )
    diff = text_diff(generated("dev"), changed, "dev.txt (before)", "dev.txt (after)")
    removed = [line for line in diff.splitlines() if line.startswith("-") and "---" not in line]
    added = [line for line in diff.splitlines() if line.startswith("+") and "+++" not in line]
    assert removed.count(f"-      retryConfig.maxAttempts = {attempts}") == 2  # both queues
    assert added.count(f"+      retryConfig.maxAttempts = {attempts + 1}") == 2
    assert sum(f'"maxAttempts": {attempts},' in line for line in removed) == 2  # both services
    assert sum(f'"maxAttempts": {attempts + 1},' in line for line in added) == 2
    assert sum(line.startswith("-      attempt 1 at 0 s") for line in removed) == 1  # the plan
    assert len(removed) == len(added) == 5


def test_manifest_is_deterministic_across_runs() -> None:
    """Stable output: a second run of the program renders byte for byte the same text."""
    assert render(run_stack("Pulumi.dev.yaml")) == generated("dev")


def test_cloud_assigned_values_appear_as_references_and_promoted_digests_literally() -> None:
    """No mock value is committed: URLs and build digests show as <resource.output>, while
    an image promoted by digest (prod deploying dev's image) shows the digest itself."""
    text = generated("dev")
    assert "a.run.app" not in text
    assert "sha256:" not in text
    assert "WORKER_URL = <worker-service.uri>" in text
    image = f"us-docker.pkg.dev/cloud-run-tasks-dev/cloud-run-book/worker@{DIGEST}"
    promoted = render(
        run_stack("Pulumi.dev.yaml", overrides={"cloud-run-tasks:workerImage": image})
    )
    assert f"template.containers[0].image = {image}" in promoted


def test_access_summary_and_policy_section_show_a_public_worker() -> None:
    """Access summary: a grant of the worker to allUsers appears under 'Public' and fails
    the policy pack's worker-never-public rule in the manifest itself."""
    run = run_stack("Pulumi.dev.yaml")
    invoker = next(r for r in run.resources if r.name == "worker-invoker-task-app")
    public = dataclasses.replace(
        invoker,
        urn=invoker.urn.replace("worker-invoker-task-app", "worker-invoker-public"),
        name="worker-invoker-public",
        inputs={**invoker.inputs, "member": "allUsers"},
    )
    text = render(dataclasses.replace(run, resources=[*run.resources, public]))
    public_section = text.split("Public (anyone on the internet):\n", 1)[1].split("\n\n", 1)[0]
    assert public_section.splitlines() == [
        "  allUsers may invoke Cloud Run service task-app",
        "  allUsers may invoke Cloud Run service worker",
    ]
    assert "  FAIL (1)  worker-never-public" in text


def test_check_command_fails_with_the_diff_and_write_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m stack_review --check` exits 1 with a diff and the hint; after `--write`
    (what `make manifest` runs) it exits 0."""
    directory = str(tmp_path)
    (tmp_path / "dev.txt").write_text(
        generated("dev").replace("maxDoublings = ", "maxDoublings = 9")
    )
    assert main(["--check", "--stack", "dev", "--dir", directory]) == 1
    out = capsys.readouterr().out
    assert "run `make manifest`" in out
    assert "+      retryConfig.maxDoublings = " in out
    assert main(["--write", "--stack", "dev", "--dir", directory]) == 0
    assert main(["--check", "--stack", "dev", "--dir", directory]) == 0
    assert (tmp_path / "dev.txt").read_text() == generated("dev")


def test_unknown_stack_is_refused_naming_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    """Bad input: an unknown stack stops with a message naming it and the known stacks."""
    with pytest.raises(SystemExit) as stop:
        main(["--check", "--stack", "staging"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "'staging'" in err
    assert all(repr(stack) in err for stack in STACKS)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_the_manifest_shows_the_keep_rule_for_promoted_images(stack: str) -> None:
    """dev's cleanup cannot delete what prod runs: the reviewed manifest shows a KEEP rule
    for tagged versions whose tag starts with the promotion prefix."""
    lines = [line.strip() for line in generated(stack).splitlines()]
    [index] = [i for i, line in enumerate(lines) if line.endswith(".id = keep-promoted")]
    rule = lines[index].split(".id = ")[0]
    assert f"{rule}.action = KEEP" in lines
    assert f"{rule}.condition.tagState = TAGGED" in lines
    assert f"{rule}.condition.tagPrefixes[0] = prod-" in lines


def test_the_manifest_shows_a_missing_grant_of_the_permission_map() -> None:
    """A reviewer sees the permission map's verdict: with the task-app's list grant gone,
    the call reads MISSING and the count says so."""
    run = run_stack("Pulumi.dev.yaml")
    assert "Missing or surplus: none" in render(run)
    without = dataclasses.replace(
        run, resources=[r for r in run.resources if r.name != "jobs-viewer-task-app"]
    )
    text = render(without)
    assert "cloudtasks.tasks.list on queue jobs for serviceAccount:task-app@" in text
    assert "Missing or surplus: 1" in text
    listed = [line for line in text.splitlines() if "cloudtasks.tasks.list on queue jobs " in line]
    assert listed[0].endswith(": MISSING")
