"""The metadata server: google-auth's own ``google.auth.default()`` finds it exactly as on
Cloud Run, gets the account's identity from it, and the REST API then decides by the
queue's policy for that account. The client runs in a process of its own whose
environment can reach no real credentials (its own CLOUDSDK_CONFIG, no
GOOGLE_APPLICATION_CREDENTIALS): google-auth reads the metadata variables once, on import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import google.auth.transport.requests
import pytest
from google.iam.v1 import policy_pb2
from google.oauth2 import id_token
from tasks_emulator import Emulator, EmulatorThread

from .conftest import PARENT

Q = f"{PARENT}/queues/jobs"
APP = "task-app@test-project.iam.gserviceaccount.com"

CLIENT = r"""
import json, sys
import google.auth
import google.auth.transport.requests
from google.api_core import exceptions
from google.cloud import tasks_v2
from google.oauth2 import id_token

rest_url, queue, audience = sys.argv[1:4]
credentials, project = google.auth.default()
client = tasks_v2.CloudTasksClient(
    transport="rest", client_options={"api_endpoint": rest_url}, credentials=credentials
)
out = {"project": project, "email": None}
task = client.create_task(parent=queue, task=tasks_v2.Task(http_request={"url": "http://127.0.0.1:9/"}))
out["created"] = task.name
try:
    list(client.list_tasks(parent=queue))
    out["listed"] = "allowed"
except exceptions.Forbidden as error:
    out["listed"] = error.response.json()["error"]["message"]
out["email"] = credentials.service_account_email
request = google.auth.transport.requests.Request()
out["id_token"] = id_token.fetch_id_token(request, audience)
print(json.dumps(out))
"""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    runner = EmulatorThread(port=0, keys_port=0, rest_port=0, metadata={APP: 0})
    emulator = runner.start()
    try:
        runner.call(emulator.ensure_queue, {"name": Q})
        policy = policy_pb2.Policy(
            bindings=[
                policy_pb2.Binding(
                    role="roles/cloudtasks.enqueuer", members=[f"serviceAccount:{APP}"]
                )
            ]
        )
        runner.call(emulator.iam.set_policy, Q, policy)
        yield emulator
    finally:
        runner.stop()


def _get(url: str, flavor: bool = True) -> tuple[int, dict[str, str], bytes]:
    headers = {"Metadata-Flavor": "Google"} if flavor else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_google_auth_default_finds_it_and_iam_follows_the_policy(
    emulator: Emulator, tmp_path: Path
) -> None:
    """The enqueuer account from the metadata server may create a task and is refused
    ListTasks in Google's words; its project, email and an ID token for any audience
    (verifiable with the emulator's keys) come from the same server."""
    host = emulator.metadata_host(APP)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT")
    }
    env.update(
        GCE_METADATA_HOST=host,
        GCE_METADATA_IP=host,
        CLOUDSDK_CONFIG=str(tmp_path / "gcloud"),
        NO_GCE_CHECK="False",
    )
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, emulator.rest_url, Q, "https://worker.example"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["project"] == "test-project"
    assert out["email"] == APP
    assert out["created"].startswith(Q + "/tasks/")
    assert out["listed"] == (
        'The principal (user or service account) lacks IAM permission "cloudtasks.tasks.list" '
        f'for the resource "{Q}" (or the resource may not exist).'
    )
    claims = id_token.verify_token(
        out["id_token"],
        google.auth.transport.requests.Request(),
        audience="https://worker.example",
        certs_url=emulator.certs_url,
    )
    assert claims["email"] == APP
    assert claims["email_verified"] is True


def test_metadata_flavor_both_ways(emulator: Emulator) -> None:
    """Every answer says Metadata-Flavor: Google; /computeMetadata/ answers only requests
    that say it too and are not forwarded, so a browser page cannot read tokens."""
    root = f"http://{emulator.metadata_host(APP)}"
    status, headers, _ = _get(root + "/", flavor=False)
    assert (status, headers["Metadata-Flavor"]) == (200, "Google")
    token_url = root + "/computeMetadata/v1/instance/service-accounts/default/token"
    status, headers, _ = _get(token_url, flavor=False)
    assert (status, headers["Metadata-Flavor"]) == (403, "Google")
    status, _, body = _get(token_url)
    assert status == 200
    token = json.loads(body)
    assert token["token_type"] == "Bearer"
    assert token["access_token"].startswith("ya29.")
    status, _, body = _get(root + f"/computeMetadata/v1/instance/service-accounts/{APP}/email")
    assert (status, body.decode()) == (200, APP)
    status, _, _ = _get(root + "/computeMetadata/v1/instance/service-accounts/other/email")
    assert status == 404
    status, _, _ = _get(root + "/computeMetadata/v1/instance/service-accounts/default/identity")
    assert status == 400  # no audience
