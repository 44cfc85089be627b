"""gcloud against the emulator's REST API: the task-scheduling chapter's `gcloud tasks`
commands, word for word, and what gcloud prints matching what the chapter shows the real
service printing. gcloud runs with a configuration directory of its own (credentials
disabled, the Cloud Tasks endpoint pointed at the emulator), never the user's."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import google.auth.transport.requests
import pytest
from google.oauth2 import id_token

from .conftest import Target, start_cli, wait_for

PROJECT = "training-363310"
SA = f"task-app@{PROJECT}.iam.gserviceaccount.com"
# What the chapter shows `gcloud tasks queues describe jobs --location us-central1`
# printing for a queue just created with `gcloud tasks queues create jobs --location
# us-central1`.
CHAPTER_DESCRIBE = f"""\
name: projects/{PROJECT}/locations/us-central1/queues/jobs
rateLimits:
  maxBurstSize: 100
  maxConcurrentDispatches: 1000
  maxDispatchesPerSecond: 500.0
retryConfig:
  maxAttempts: 100
  maxBackoff: 3600s
  maxDoublings: 16
  minBackoff: 0.100s
state: RUNNING
"""
CHAPTER_UPDATE = [
    "tasks",
    "queues",
    "update",
    "jobs",
    "--location",
    "us-central1",
    "--max-dispatches-per-second",
    "100",
    "--max-concurrent-dispatches",
    "100",
    "--max-attempts",
    "10",
    "--max-backoff",
    "15s",
    "--max-doublings",
    "3",
    "--min-backoff",
    "1s",
]

pytestmark = [
    pytest.mark.process,
    pytest.mark.skipif(
        shutil.which("gcloud") is None,
        reason="gcloud is not installed: install the Google Cloud CLI "
        "(https://cloud.google.com/sdk/docs/install, or the google-cloud-cli Debian package)",
    ),
]


class Gcloud:
    def __init__(self, config_dir: Path) -> None:
        self.env = {
            **os.environ,
            "CLOUDSDK_CONFIG": str(config_dir),
            "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        }
        for variable in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_ACTIVE_CONFIG_NAME"):
            self.env.pop(variable, None)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["gcloud", *args],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def ok(self, *args: str) -> str:
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def gcloud(tmp_path: Path) -> Iterator[tuple[Gcloud, str]]:
    process, ready = start_cli("--rest-port", "0", "--log-level", "warning")
    try:
        rest = ready.split("REST ", 1)[1].split(",", 1)[0]
        tool = Gcloud(tmp_path / "gcloud")
        tool.ok("config", "set", "auth/disable_credentials", "True")
        tool.ok("config", "set", "api_endpoint_overrides/cloudtasks", f"{rest}/")
        tool.ok("config", "set", "core/project", PROJECT)
        yield tool, ready
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)


def test_chapter_commands_verbatim(
    gcloud: tuple[Gcloud, str], make_target: Callable[[], Target]
) -> None:
    """create, describe (exactly the chapter's fields: no maxRetryDuration when it is
    unlimited), the chapter's update then describe again, the chapter's IAM binding,
    pause, create-http-task with an OIDC service account, list, resume and delivery with
    a token that verifies: the chapter's steps run unchanged against the emulator."""
    tool, ready = gcloud
    target: Target = make_target()
    tool.ok("tasks", "queues", "create", "jobs", "--location", "us-central1")
    assert tool.ok("tasks", "queues", "describe", "jobs", "--location", "us-central1") == (
        CHAPTER_DESCRIBE
    )
    tool.ok(*CHAPTER_UPDATE)
    described = tool.ok("tasks", "queues", "describe", "jobs", "--location", "us-central1")
    for line in ("maxConcurrentDispatches: 100", "maxDispatchesPerSecond: 100.0",
                 "maxBurstSize: 20", "maxAttempts: 10", "maxBackoff: 15s", "maxDoublings: 3",
                 "minBackoff: 1s"):  # fmt: skip
        assert f"  {line}\n" in described, described
    assert "maxRetryDuration" not in described
    tool.ok(
        "tasks", "queues", "add-iam-policy-binding",
        f"projects/{PROJECT}/locations/us-central1/queues/jobs",
        "--member", f"serviceAccount:{SA}", "--role", "roles/cloudtasks.enqueuer",
    )  # fmt: skip
    policy = tool.ok("tasks", "queues", "get-iam-policy", "jobs", "--location", "us-central1")
    assert f"serviceAccount:{SA}" in policy
    assert "roles/cloudtasks.enqueuer" in policy
    tool.ok("tasks", "queues", "pause", "jobs", "--location", "us-central1")
    created = tool.run(
        "tasks", "create-http-task", "--queue", "jobs", "--location", "us-central1",
        "--url", target.url + "/tasks", "--oidc-service-account-email", SA,
        "--body-content", '{"message": "hello"}',
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    listed = tool.ok("tasks", "list", "--queue", "jobs", "--location", "us-central1")
    rows = listed.strip().splitlines()
    assert len(rows) == 2, listed
    assert " http " in rows[1], listed
    tool.ok("tasks", "queues", "resume", "jobs", "--location", "us-central1")
    wait_for(lambda: len(target.received) == 1, timeout=10)
    received = target.received[0]
    assert received.body == b'{"message": "hello"}'
    certs = ready.split("OIDC certs ", 1)[1].split(",", 1)[0].strip()
    claims = id_token.verify_token(
        received.headers["Authorization"].removeprefix("Bearer "),
        google.auth.transport.requests.Request(),
        audience=target.url + "/tasks",
        certs_url=certs,
    )
    assert claims["email"] == SA


def test_invalid_update_is_refused_with_the_api_message(gcloud: tuple[Gcloud, str]) -> None:
    """An update outside the API's limits (rate 800) fails with a non-zero exit and the
    API's own message, and changes nothing."""
    tool, _ = gcloud
    tool.ok("tasks", "queues", "create", "jobs", "--location", "us-central1")
    refused = tool.run(
        "tasks", "queues", "update", "jobs", "--location", "us-central1",
        "--max-dispatches-per-second", "800",
    )  # fmt: skip
    assert refused.returncode != 0
    assert (
        "INVALID_ARGUMENT: RateLimits.maxDispatchesPerSecond must be less than or equal to 500."
        in refused.stderr
    )
    described = tool.ok("tasks", "queues", "describe", "jobs", "--location", "us-central1")
    assert described == CHAPTER_DESCRIBE
