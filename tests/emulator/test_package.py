"""The emulator is a product of its own: ``uv build`` in emulator/ makes a wheel holding
only the emulator, declaring only its own dependencies and the ``tasks-emulator`` console
script, and no module of it imports anything of this project."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from .conftest import ROOT

EMULATOR = ROOT / "emulator"
PACKAGE = EMULATOR / "tasks_emulator"
# Top-level names of this project's own code, which the emulator must never import.
PROJECT_MODULES = {
    "app", "bench", "components", "local_stack", "policy", "service_common", "stack_review",
    "stack_settings", "task_app", "tests", "worker",
}  # fmt: skip


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_emulator_imports_nothing_of_this_project() -> None:
    """Every module of tasks_emulator imports only the standard library, its declared
    dependencies and itself."""
    modules = sorted(PACKAGE.rglob("*.py"))
    assert modules
    allowed = set(sys.stdlib_module_names) | {
        "tasks_emulator", "google", "grpc", "aiohttp", "cryptography", "jwt", "uvloop",
    }  # fmt: skip
    for module in modules:
        imported = _imports(module)
        assert not imported & PROJECT_MODULES, (module, imported & PROJECT_MODULES)
        assert imported <= allowed, (module, imported - allowed)


@pytest.mark.skipif(shutil.which("uv") is None, reason="needs uv (https://docs.astral.sh/uv/)")
def test_wheel_carries_the_emulator_its_dependencies_and_the_console_script(
    tmp_path: Path,
) -> None:
    """The wheel holds tasks_emulator (with its data files) and nothing else, requires
    exactly the dependencies emulator/pyproject.toml declares, and installs the
    tasks-emulator command."""
    built = subprocess.run(
        ["uv", "build", "--wheel", "--out-dir", str(tmp_path)],
        cwd=EMULATOR, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("tasks_emulator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name for name in names if name.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(info).decode())
        entry_points = archive.read(info.replace("METADATA", "entry_points.txt")).decode()
    packaged = {name for name in names if ".dist-info/" not in name}
    assert all(name.startswith("tasks_emulator/") for name in packaged), packaged
    assert "tasks_emulator/data/cloudtasks_roles.json" in packaged
    assert "tasks_emulator/data/error_texts.json" in packaged
    declared = tomllib.loads((EMULATOR / "pyproject.toml").read_text())["project"]
    assert _same(metadata.get_all("Requires-Dist") or [], declared["dependencies"])
    assert "tasks-emulator = tasks_emulator.__main__:main" in entry_points


def _same(got: list[str], declared: list[str]) -> bool:
    """Requirements equal up to the spacing a build backend normalises."""

    def norm(requirement: str) -> str:
        return requirement.replace(" ", "").replace('"', "'")

    return sorted(map(norm, got)) == sorted(map(norm, declared))
