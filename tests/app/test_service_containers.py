"""What can be checked of the container images without a Docker engine: pinned
requirements in step with uv.lock, lean per service, and the Dockerfiles' promises."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = {"task_app": "task-app", "worker": "worker"}


def _requirement_lines(text: str) -> list[str]:
    # The header names the command and output file; the pins and hashes are what matter.
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _uv() -> list[str]:
    uv = shutil.which("uv")
    return [uv] if uv else [sys.executable, "-m", "uv"]


@pytest.mark.parametrize(("package", "group"), SERVICES.items())
def test_requirements_match_uv_lock(package: str, group: str) -> None:
    """The image installs exactly what uv.lock pins for the service's group; after a lock
    change, `make requirements` must be run (this test says so otherwise)."""
    exported = subprocess.run(
        [*_uv(), "export", "--frozen", "--quiet", "--only-group", group, "--no-emit-project"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    committed = (REPO / "app" / package / "requirements.txt").read_text()

    assert _requirement_lines(committed) == _requirement_lines(exported), (
        f"app/{package}/requirements.txt is out of date with uv.lock: run `make requirements`"
    )


def _pinned_names(package: str) -> set[str]:
    text = (REPO / "app" / package / "requirements.txt").read_text()
    return {match.lower() for match in re.findall(r"^([A-Za-z0-9_.-]+)==", text, re.MULTILINE)}


def test_each_image_holds_only_its_own_dependencies() -> None:
    """No Pulumi, emulator or test tooling in either image, nor a logging library (the
    structured log lines are written with the standard library); the Cloud Tasks client
    only in task-app, the token verifier's requests only where needed."""
    task_app, worker = _pinned_names("task_app"), _pinned_names("worker")
    for names in (task_app, worker):
        assert {"flask", "gunicorn"} <= names
        assert not names & {"pulumi", "pulumi-gcp", "pytest", "aiohttp", "pyjwt", "ruff"}
        assert "google-cloud-logging" not in names
    assert "google-cloud-tasks" in task_app
    assert "flask-wtf" in task_app
    assert "google-cloud-tasks" not in worker
    assert "grpcio" not in worker
    assert "flask-wtf" not in worker
    assert {"google-auth", "requests"} <= worker


@pytest.mark.parametrize("package", SERVICES)
def test_dockerfile_promises(package: str) -> None:
    """Slim pinned base, requirements installed (with hashes) before the code is copied, a
    non-root user, and gunicorn as PID 1 with the service's own config."""
    lines = [
        line.strip()
        for line in (REPO / "app" / package / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    text = "\n".join(lines)

    assert re.search(r"^FROM python:3\.11\.\d+-slim", text, re.MULTILINE)
    assert "--require-hashes" in text
    copy_requirements = text.index(f"COPY {package}/requirements.txt")
    copy_code = text.index(f"COPY {package}/ {package}/")
    assert copy_requirements < text.index("pip install") < copy_code
    assert "COPY . " not in text
    other = next(name for name in SERVICES if name != package)
    assert f"COPY {other}/" not in text
    users = [line for line in lines if line.startswith("USER ")]
    assert users
    assert users[-1] not in {"USER root", "USER 0"}
    assert lines[-1] == (
        f'CMD ["gunicorn", "-c", "python:{package}.gunicorn_conf", "{package}:create_app()"]'
    )


def test_dockerignore_keeps_caches_out_of_the_context() -> None:
    """Bytecode and tool caches never reach the build context."""
    ignored = (REPO / "app" / ".dockerignore").read_text().splitlines()
    for pattern in ("**/__pycache__", "**/*.py[cod]", "**/.pytest_cache"):
        assert pattern in ignored
