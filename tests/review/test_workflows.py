"""The GitHub workflows keep the promises the review and CI guides make: pinned actions,
least permissions, keyless credentials, the policy pack in every preview and deploy, and
prod only behind its protected environment, promoting dev's digests.

check-jsonschema and zizmor (in `make lint`) check the workflows' shape and common
weaknesses; these tests check this project's own rules, which neither knows.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stack_review import run_stack

REPOSITORY = "gcp:artifactregistry/repository:Repository"

WORKFLOWS = Path(__file__).resolve().parents[2] / ".github" / "workflows"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$")


def load(name: str) -> dict[str, Any]:
    # PyYAML reads the `on:` key as True; the workflows are otherwise plain mappings.
    loaded: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    return loaded


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job, step) for job, spec in workflow["jobs"].items() for step in spec["steps"]]


def uses(step: dict[str, Any], action: str) -> bool:
    return str(step.get("uses", "")).startswith(f"{action}@")


@pytest.fixture(scope="module")
def workflows() -> dict[str, dict[str, Any]]:
    found = {path.name: load(path.name) for path in sorted(WORKFLOWS.glob("*.yml"))}
    assert set(found) == {"test.yml", "preview.yml", "deploy.yml"}
    return found


def test_every_action_is_pinned_to_a_commit_with_its_version(workflows: dict[str, Any]) -> None:
    """Supply chain: each `uses:` names a full commit hash followed by `# vX.Y.Z`, so a
    moved tag cannot change what runs."""
    lines = [
        line.strip().removeprefix("- ").removeprefix("uses: ")
        for name in workflows
        for line in (WORKFLOWS / name).read_text().splitlines()
        if line.strip().removeprefix("- ").startswith("uses:")
    ]
    assert lines
    assert [line for line in lines if not PINNED.match(line)] == []


def test_permissions_are_empty_by_default_and_granted_per_job(workflows: dict[str, Any]) -> None:
    """Least permissions: no workflow-wide grant; each job states what it needs, and only
    jobs that authenticate to Google Cloud may mint an OIDC token."""
    for name, workflow in workflows.items():
        assert workflow["permissions"] == {}, name
        for job, spec in workflow["jobs"].items():
            permissions = spec["permissions"]
            assert permissions.get("contents") == "read", (name, job)
            authenticates = any(uses(s, "google-github-actions/auth") for s in spec["steps"])
            assert (permissions.get("id-token") == "write") == authenticates, (name, job)


def test_checkouts_do_not_persist_the_token(workflows: dict[str, Any]) -> None:
    """No job leaves the GitHub token in .git/config for later steps to find."""
    checkouts = [s for w in workflows.values() for _, s in steps(w) if uses(s, "actions/checkout")]
    assert len(checkouts) == 4
    assert all(s["with"]["persist-credentials"] is False for s in checkouts)


def test_google_credentials_come_from_workload_identity_only(workflows: dict[str, Any]) -> None:
    """Keyless: every Google login is Workload Identity Federation, never a JSON key."""
    logins = [
        s for w in workflows.values() for _, s in steps(w) if uses(s, "google-github-actions/auth")
    ]
    assert len(logins) == 3
    for login in logins:
        assert set(login["with"]) == {"workload_identity_provider", "service_account"}
    text = "".join((WORKFLOWS / name).read_text() for name in workflows)
    assert "credentials_json" not in text


def test_preview_runs_each_stack_with_the_policy_pack_and_comments(
    workflows: dict[str, Any],
) -> None:
    """Review: every stack is previewed with a diff, the policy pack and a PR comment."""
    job = workflows["preview.yml"]["jobs"]["preview"]
    assert job["strategy"]["matrix"]["stack"] == ["dev", "prod"]
    [pulumi] = [s for s in job["steps"] if uses(s, "pulumi/actions")]
    assert pulumi["with"]["command"] == "preview"
    assert pulumi["with"]["diff"] is True
    assert pulumi["with"]["comment-on-pr"] is True
    assert pulumi["with"]["policyPacks"] == "policy"
    assert job["permissions"]["pull-requests"] == "write"


def test_deploy_dev_on_main_and_prod_only_by_dispatch_behind_its_environment(
    workflows: dict[str, Any],
) -> None:
    """Deploy: dev on push to main; prod on manual dispatch, in the `prod` environment
    (required reviewers), never cancelled half-way, with the policy pack enforced."""
    deploy = workflows["deploy.yml"]
    assert set(deploy[True]) == {"push", "workflow_dispatch"}
    dev, prod = deploy["jobs"]["dev"], deploy["jobs"]["prod"]
    assert dev["if"] == "github.event_name == 'push'"
    assert "workflow_dispatch" in prod["if"]
    assert "refs/heads/main" in prod["if"]
    assert (dev["environment"], prod["environment"]) == ("dev", "prod")
    for job in (dev, prod):
        assert job["concurrency"]["cancel-in-progress"] is False
        ups = [
            s for s in job["steps"] if uses(s, "pulumi/actions") and s["with"]["command"] == "up"
        ]
        assert [s["with"]["policyPacks"] for s in ups] == ["policy"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_each_deploy_runs_the_offline_preflight_first(
    workflows: dict[str, Any], stack: str
) -> None:
    """Before any credential and before `pulumi up`, the job checks every value its stack
    declares against Google's schemas (``python -m preflight``), with the preflight group
    installed."""
    job_steps = workflows["deploy.yml"]["jobs"][stack]["steps"]
    [preflight] = [s for s in job_steps if "python -m preflight" in s.get("run", "")]
    assert preflight["run"].endswith(f"python -m preflight --stack {stack}")
    [install] = [s for s in job_steps if "uv sync" in s.get("run", "")]
    assert "--group preflight" in install["run"]
    [auth] = [s for s in job_steps if uses(s, "google-github-actions/auth")]
    [up] = [s for s in job_steps if uses(s, "pulumi/actions") and s["with"]["command"] == "up"]
    order = [job_steps.index(s) for s in (install, preflight, auth, up)]
    assert order == sorted(order)


def test_prod_deploys_the_digests_dev_runs(workflows: dict[str, Any]) -> None:
    """Promotion: prod reads dev's image outputs, checks they are digests, and sets them
    as its taskAppImage/workerImage config for the same `pulumi up`."""
    prod_steps = workflows["deploy.yml"]["jobs"]["prod"]["steps"]
    [read] = [s for s in prod_steps if s.get("id") == "dev"]
    assert read["with"]["command"] == "output"
    assert "dev" in read["with"]["stack-name"]
    [up] = [s for s in prod_steps if uses(s, "pulumi/actions") and s["with"]["command"] == "up"]
    config = yaml.safe_load(up["with"]["config-map"])
    assert config == {
        "cloud-run-tasks:taskAppImage": {
            "value": "${{ steps.dev.outputs.taskAppImage }}",
            "secret": False,
        },
        "cloud-run-tasks:workerImage": {
            "value": "${{ steps.dev.outputs.workerImage }}",
            "secret": False,
        },
    }
    check = next(s for s in prod_steps if "sha256" in s.get("run", ""))
    assert prod_steps.index(read) < prod_steps.index(check) < prod_steps.index(up)


def test_prod_tags_what_it_promotes_so_devs_cleanup_keeps_it(workflows: dict[str, Any]) -> None:
    """Promotion cannot delete what prod runs: before prod's `pulumi up`, both digests dev
    runs are tagged with a tag the registry's KEEP rule protects (the prefix is read from
    what the stack declares, so the two cannot drift apart)."""
    [keep] = [
        policy
        for policy in run_stack("Pulumi.dev.yaml").one(REPOSITORY).inputs["cleanupPolicies"]
        if policy["action"] == "KEEP" and policy.get("condition", {}).get("tagPrefixes")
    ]
    assert keep["condition"]["tagState"] == "TAGGED"
    [prefix] = keep["condition"]["tagPrefixes"]
    prod_steps = workflows["deploy.yml"]["jobs"]["prod"]["steps"]
    [tag] = [s for s in prod_steps if "docker tags add" in s.get("run", "")]
    assert tag["env"]["TASK_APP_IMAGE"] == "${{ steps.dev.outputs.taskAppImage }}"
    assert tag["env"]["WORKER_IMAGE"] == "${{ steps.dev.outputs.workerImage }}"
    assert tag["env"]["PROMOTED_TAG"].startswith(prefix)
    assert '"$TASK_APP_IMAGE" "$WORKER_IMAGE"' in tag["run"]
    assert '"${ref%@*}:$PROMOTED_TAG"' in tag["run"]
    assert "${{" not in tag["run"]  # values through env only: no template injection
    [auth] = [s for s in prod_steps if uses(s, "google-github-actions/auth")]
    [up] = [s for s in prod_steps if uses(s, "pulumi/actions") and s["with"]["command"] == "up"]
    assert prod_steps.index(auth) < prod_steps.index(tag) < prod_steps.index(up)


def test_test_workflow_runs_the_projects_ci_entry_point(workflows: dict[str, Any]) -> None:
    """CI parity: the test workflow runs .ci/run (make lint, make test) on PRs and main."""
    workflow = workflows["test.yml"]
    assert set(workflow[True]) == {"pull_request", "push"}
    runs = [s.get("run", "") for _, s in steps(workflow)]
    assert "bash .ci/run" in runs
    assert any("chromium" in run for run in runs)
