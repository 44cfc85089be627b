"""The policy pack loads in its own environment and wraps every rule.

The project's environment cannot hold pulumi-policy, so this test makes a throwaway
virtualenv from policy/requirements.txt (as the Pulumi CLI does for ``--policy-pack``),
runs tests/policy/pack_smoke.py in it and checks what the real SDK reported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from policy import stack_rules

ROOT = Path(__file__).resolve().parents[2]


def _uv() -> list[str]:
    found = shutil.which("uv")
    return [found] if found else [sys.executable, "-m", "uv"]


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    venv = tmp_path_factory.mktemp("policy") / "venv"
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    subprocess.run(
        [*_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)],
        check=True,
        env=env,
        timeout=120,
    )
    python = venv / "bin" / "python"
    requirements = ROOT / "policy" / "requirements.txt"
    subprocess.run(
        [*_uv(), "pip", "install", "--quiet", "--python", str(python), "-r", str(requirements)],
        check=True,
        env=env,
        timeout=240,
    )
    result = subprocess.run(
        [str(python), str(ROOT / "tests" / "policy" / "pack_smoke.py")],
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k != "PULUMI_STACK"},
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def test_pack_wraps_every_rule_in_order(smoke_report: dict[str, Any]) -> None:
    """The pack the CLI loads holds exactly the rules the unit tests cover."""
    assert smoke_report["policies"] == [rule.name for rule in stack_rules.RULES]


def test_every_policy_reports_its_breach_through_the_sdk(smoke_report: dict[str, Any]) -> None:
    """Each wrapper passes CrossGuard's proxied properties to its rule and reports what it
    finds; deletion protection reads the stack from each resource's URN (prod reported,
    the same resource in dev not)."""
    reported = smoke_report["reported"]
    assert all(reported[rule.name] for rule in stack_rules.RULES), reported
    assert "'prod'" in reported["deletion-protection-in-prod"][0]
    assert smoke_report["dev_deletion_protection_reports"] == 0
    assert len(reported["service-accounts-not-shared"]) == 2


def test_pack_environment_keeps_its_own_protobuf(smoke_report: dict[str, Any]) -> None:
    """pulumi-policy runs on the protobuf it pins, below the project's 6.x."""
    assert int(smoke_report["protobuf"].split(".")[0]) < 6
    assert smoke_report["unknown_raises"] is True
