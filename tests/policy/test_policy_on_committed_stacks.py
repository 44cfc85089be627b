"""The policy pack passes every committed stack as the real program declares it.

The preview workflow runs the pack against the real cloud; this runs the same rules over
the resources the program registers under mocks, so a change that would fail the pack in
a pull request's preview already fails here, offline.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from policy import stack_rules
from stack_review import run_stack, stack_name
from stack_settings import stack_files

STACK_FILES = stack_files()


@pytest.mark.parametrize("stack_file", STACK_FILES, ids=[stack_name(p) for p in STACK_FILES])
def test_committed_stack_breaks_no_rule(stack_file: Path) -> None:
    """Every security invariant holds for every committed stack (prod with its deletion
    protection, dev without), over the inputs CrossGuard would see."""
    run = run_stack(stack_file)
    resources = [stack_rules.StackResource(r.type, r.inputs, r.urn, r.name) for r in run.resources]
    context = stack_rules.RuleContext(stack=run.stack)
    assert stack_rules.check_stack(resources, context) == []
    # The rules did see the resources they guard (not vacuously empty).
    types = {r.resource_type for r in resources}
    assert {"gcp:cloudrunv2/service:Service", "gcp:cloudtasks/queue:Queue"} <= types
    assert any(stack_rules.iam_grants(r.resource_type, r.props) for r in resources)


def test_prod_stack_with_protection_off_fails_the_pack() -> None:
    """The pack is stack-aware on the real program: prod with deletionProtection false is
    reported for each protected resource, naming the stack."""
    run = run_stack("Pulumi.prod.yaml", overrides={"cloud-run-tasks:deletionProtection": False})
    resources = [stack_rules.StackResource(r.type, r.inputs, r.urn, r.name) for r in run.resources]
    found = stack_rules.check_stack(resources, stack_rules.RuleContext(stack=run.stack))
    assert {name for name, _, _ in found} == {"deletion-protection-in-prod"}
    assert {urn.rsplit("::", 1)[-1] for _, urn, _ in found} >= {
        "worker-service",
        "task-app-service",
    }
