"""No answer of the emulator echoes the host a client claims: Host, X-Forwarded-Host and
Forwarded are the client's to choose, so an answer built from them would let a client
point verifiers or other callers at an address of its choosing. Every HTTP endpoint (the
OIDC keys, the REST API, each metadata server), on success and on error, names only the
address the emulator was started on."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from tasks_emulator import EmulatorThread
from tasks_emulator.server import Emulator

from .conftest import PARENT

EMAIL = "task-app@host-test-project.iam.gserviceaccount.com"
QUEUE = f"{PARENT}/queues/jobs"
FORGED = {
    "Host": "evil.example:9999",
    "X-Forwarded-Host": "evil-forwarded.example",
    "X-Forwarded-Proto": "gopher",
    "Forwarded": "host=evil-forwarded.example;proto=gopher",
}
META = "/computeMetadata/v1"
ACCOUNT = f"{META}/instance/service-accounts/default"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    runner = EmulatorThread(host="127.0.0.1", port=0, keys_port=0, rest_port=0, metadata={EMAIL: 0})
    started = runner.start()
    try:
        request = urllib.request.Request(
            f"{started.rest_url}/v2/{PARENT}/queues",
            data=json.dumps({"name": QUEUE}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        yield started
    finally:
        runner.stop()


def _answer(url: str, headers: dict[str, str], method: str = "GET") -> tuple[int, str]:
    """Status, then every header and the body of the answer as one text."""
    request = urllib.request.Request(url, headers={**FORGED, **headers}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, got, body = response.status, response.headers.items(), response.read()
    except urllib.error.HTTPError as error:
        status, got, body = error.code, error.headers.items(), error.read()
    text = "\n".join(f"{k}: {v}" for k, v in got) + "\n\n" + body.decode("utf-8", "replace")
    return status, text


def _endpoints(emulator: Emulator) -> list[tuple[str, dict[str, str], int]]:
    flavor = {"Metadata-Flavor": "Google"}
    metadata = f"http://{emulator.metadata_host(EMAIL)}"
    keys, rest = emulator.keys_url, emulator.rest_url
    return [
        (f"{keys}/.well-known/openid-configuration", {}, 200),
        (f"{keys}/oauth2/v3/certs", {}, 200),
        (f"{keys}/oauth2/v1/certs", {}, 200),
        (f"{keys}/no/such/page", {}, 404),
        (f"{rest}/v2/{QUEUE}", {}, 200),
        (f"{rest}/v2/{PARENT}/queues", {}, 200),
        (f"{rest}/v2/{QUEUE}/tasks", {}, 200),
        (f"{rest}/v2/{PARENT}/queues/missing", {}, 404),
        (f"{rest}/v2/nothing/here", {}, 404),
        (f"{metadata}/", {}, 200),
        (f"{metadata}{META}/project/project-id", flavor, 200),
        (f"{metadata}{ACCOUNT}/email", flavor, 200),
        (f"{metadata}{ACCOUNT}/", flavor, 200),
        (f"{metadata}{ACCOUNT}/token", flavor, 200),
        (f"{metadata}{ACCOUNT}/identity?audience=https://worker.example", flavor, 200),
        (f"{metadata}{ACCOUNT}/email", {}, 403),
        (f"{metadata}{META}/instance/service-accounts/other@x.iam/email", flavor, 404),
    ]


def test_no_answer_echoes_a_forged_host(emulator: Emulator) -> None:
    seen = []
    for url, headers, status in _endpoints(emulator):
        got, text = _answer(url, headers)
        assert got == status, (url, text)
        assert "evil" not in text, (url, text)
        assert "gopher" not in text, (url, text)
        seen.append(url)
    assert len(seen) == len(_endpoints(emulator))


def test_the_key_urls_name_the_address_the_emulator_was_started_on(emulator: Emulator) -> None:
    _, text = _answer(f"{emulator.keys_url}/.well-known/openid-configuration", {})
    config = json.loads(text.split("\n\n", 1)[1])
    assert config["jwks_uri"] == f"{emulator.keys_url}/oauth2/v3/certs"
