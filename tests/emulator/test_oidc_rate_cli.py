"""OIDC tokens verified with google-auth against the served keys; the token bucket and
the concurrency limit; the command line (ready line, configured queues, clean stop)."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import pytest
from google.auth import exceptions as auth_exceptions
from google.cloud import tasks_v2
from google.oauth2 import id_token
from tasks_emulator.oidc import ISSUER

from .conftest import PARENT, START, Harness, Target, client_for, start_cli, wait_for

SA = "task-app@test-project.iam.gserviceaccount.com"


def _token(target: Target, index: int = 0) -> str:
    header = target.received[index].headers["Authorization"]
    assert header.startswith("Bearer ")
    return header.removeprefix("Bearer ")


def test_oidc_token_verifies_with_google_auth(
    real_harness: Harness, make_target: Callable[[], Target]
) -> None:
    """Each attempt carries a fresh RS256 ID token, Google-shaped, that google-auth
    verifies against the emulator's PEM certs; it replaces the task's Authorization."""
    target = make_target()
    target.replies = [500, 200]
    emulator = real_harness.runner.emulator
    assert emulator is not None
    queue = real_harness.queue("jobs", retry_config={"min_backoff": {"seconds": 1}})
    real_harness.task(
        queue,
        target.url + "/tasks?x=1",
        http={
            "headers": {"Authorization": "Bearer forged"},
            "oidc_token": {"service_account_email": SA, "audience": target.url},
        },
    )
    wait_for(lambda: len(target.received) == 2)
    request = google.auth.transport.requests.Request()
    claims = id_token.verify_token(
        _token(target), request, audience=target.url, certs_url=emulator.certs_url
    )
    assert claims["email"] == SA
    assert claims["email_verified"] is True
    assert claims["iss"] == ISSUER
    assert claims["exp"] - claims["iat"] == 3600
    assert claims["sub"] == claims["azp"]
    assert abs(claims["iat"] - time.time()) < 5
    first = id_token.verify_token(
        _token(target, 0), request, audience=target.url, certs_url=emulator.certs_url
    )
    assert first["email"] == SA  # the retry got its own token, minted at its dispatch
    with pytest.raises(ValueError, match="audience"):
        id_token.verify_token(
            _token(target), request, audience="http://other", certs_url=emulator.certs_url
        )
    forged = _token(target)[:-4] + "AAAA"
    with pytest.raises((ValueError, auth_exceptions.GoogleAuthError)):
        id_token.verify_token(forged, request, audience=target.url, certs_url=emulator.certs_url)


def test_oidc_audience_defaults_to_full_url(
    real_harness: Harness, make_target: Callable[[], Target]
) -> None:
    """Without an audience the token's aud is the full target URL, query included."""
    target = make_target()
    emulator = real_harness.runner.emulator
    assert emulator is not None
    queue = real_harness.queue("jobs")
    url = target.url + "/tasks?x=1"
    real_harness.task(queue, url, http={"oidc_token": {"service_account_email": SA}})
    wait_for(lambda: len(target.received) == 1)
    claims = id_token.verify_token(
        _token(target),
        google.auth.transport.requests.Request(),
        audience=url,
        certs_url=emulator.certs_url,
    )
    assert claims["aud"] == url


def test_keys_endpoints(real_harness: Harness) -> None:
    """JWKS and OpenID configuration are served next to the PEM certs, same key id."""
    emulator = real_harness.runner.emulator
    assert emulator is not None
    with urllib.request.urlopen(emulator.certs_url) as response:
        pem = json.load(response)
    with urllib.request.urlopen(emulator.keys_url + "/oauth2/v3/certs") as response:
        jwks = json.load(response)
    with urllib.request.urlopen(emulator.keys_url + "/.well-known/openid-configuration") as r:
        config = json.load(r)
    assert list(pem) == [key["kid"] for key in jwks["keys"]]
    assert next(iter(pem.values())).startswith("-----BEGIN CERTIFICATE-----")
    assert jwks["keys"][0]["alg"] == "RS256"
    assert config["jwks_uri"] == emulator.keys_url + "/oauth2/v3/certs"
    assert config["issuer"] == ISSUER


def test_openid_configuration_ignores_the_request_host(real_harness: Harness) -> None:
    """The key URLs name the address the emulator was started on, whatever Host a client
    sends: a forged Host must not point verifiers at someone else's keys."""
    emulator = real_harness.runner.emulator
    assert emulator is not None
    request = urllib.request.Request(
        emulator.keys_url + "/.well-known/openid-configuration",
        headers={"Host": "evil.example:9999"},
    )
    with urllib.request.urlopen(request) as response:
        config = json.load(response)
    assert config["jwks_uri"] == emulator.keys_url + "/oauth2/v3/certs"


@pytest.mark.parametrize(("rate", "burst"), [(5, 1), (50, 10), (0.5, 1)])
def test_token_bucket(harness: Harness, target: Target, rate: float, burst: int) -> None:
    """Dispatches follow the token bucket exactly: a burst, then one every 1/rate s."""
    queue = harness.queue("jobs", rate_limits={"max_dispatches_per_second": rate})
    for _ in range(burst + 10):
        harness.task(queue, target.url)
    harness.advance((10 + 1) / rate)
    times = [r.at - START for r in target.received]
    expected = [0.0] * burst + [(i + 1) / rate for i in range(10)]
    assert times == pytest.approx(expected, abs=1e-6)


def test_retries_take_tokens_too(harness: Harness, target: Target) -> None:
    """A retry is a dispatch like any other: it waits for a token."""
    target.replies = [500, 200]
    queue = harness.queue(
        "jobs",
        rate_limits={"max_dispatches_per_second": 1},
        retry_config={"min_backoff": {"nanos": 100_000_000}},
    )
    harness.task(queue, target.url)
    harness.advance(5)
    assert [r.at - START for r in target.received] == pytest.approx([0, 1])


def test_concurrency_never_exceeded(harness: Harness, target: Target) -> None:
    """At most max_concurrent_dispatches requests are in flight; the rest wait."""
    target.delay = 0.03
    queue = harness.queue("jobs", rate_limits={"max_concurrent_dispatches": 3})
    for _ in range(12):
        harness.task(queue, target.url)
    harness.advance(1)
    assert len(target.received) == 12
    assert target.max_in_flight == 3


def test_real_clock_rate(real_harness: Harness, make_target: Callable[[], Target]) -> None:
    """On the real clock, 20/s with a burst of 4 delivers 24 tasks in about one second."""
    target = make_target()
    queue = real_harness.queue("jobs", rate_limits={"max_dispatches_per_second": 20})
    for _ in range(24):
        real_harness.task(queue, target.url)
    wait_for(lambda: len(target.received) == 24)
    span = target.received[-1].at - target.received[0].at
    # Never faster than the bucket allows; a loaded machine may only make it later.
    assert 0.95 <= span <= 1.5, span


def test_hung_worker_does_not_block_its_queue(
    real_harness: Harness, make_target: Callable[[], Target]
) -> None:
    """Attempts run side by side: a hung request does not hold up the next task."""
    hung, fine = make_target(), make_target()
    hung.hang = threading.Event()
    queue = real_harness.queue("jobs")
    real_harness.task(queue, hung.url)
    wait_for(lambda: len(hung.received) == 1)
    real_harness.task(queue, fine.url)
    wait_for(lambda: len(fine.received) == 1, timeout=2)


DEV_QUEUE: dict[str, Any] = {
    "name": f"{PARENT}/queues/jobs",
    "rateLimits": {"maxDispatchesPerSecond": 100, "maxConcurrentDispatches": 100},
    "retryConfig": {"maxAttempts": 10, "minBackoff": "1s", "maxBackoff": "15s", "maxDoublings": 3},
}


@pytest.mark.process
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_config_queue_and_clean_stop(stop_signal: signal.Signals, tmp_path: Path) -> None:
    """`tasks-emulator --config FILE` prints one ready line, serves the file's queues with
    their settings (a PAUSED one paused), and exits 0 on SIGTERM or Ctrl-C."""
    paused = {"name": f"{PARENT}/queues/held", "state": "PAUSED"}
    config = tmp_path / "emulator.json"
    config.write_text(json.dumps({"queues": [DEV_QUEUE, paused]}))
    process, ready = start_cli("--config", str(config), "--log-level", "warning")
    try:
        assert ready.startswith("tasks_emulator ready: gRPC 127.0.0.1:"), ready
        address = ready.split("gRPC ", 1)[1].split(",", 1)[0]
        client = client_for(address)
        queue = client.get_queue(name=DEV_QUEUE["name"])
        held = client.get_queue(name=paused["name"])
        client.transport.close()
        assert queue.rate_limits.max_dispatches_per_second == 100
        assert queue.retry_config.max_attempts == 10
        assert queue.retry_config.max_backoff.total_seconds() == 15
        assert queue.retry_config.max_doublings == 3
        assert queue.state == tasks_v2.Queue.State.RUNNING
        assert held.state == tasks_v2.Queue.State.PAUSED
    finally:
        process.send_signal(stop_signal)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "stopped" in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read the configuration file"),
        ("{not json", "not valid JSON"),
        ('{"queue": []}', "unknown key 'queue'"),
        ('{"queues": [{"name": ""}]}', "queues[0].name must be"),
        ('{"queues": [{"name": "q", "state": "DISABLED"}]}', "must be RUNNING or PAUSED"),
        (
            '{"queues": [{"name": "projects/p/locations/l/queues/q", "rateLimits": '
            '{"maxDispatchesPerSecond": 800}}]}',
            "must be less than or equal to 500",
        ),
        (
            '{"queues": [{"name": "projects/p/locations/l/queues/q", "retryConfig": '
            '{"maxAttemps": 3}}]}',
            "maxAttemps",
        ),
    ],
)
@pytest.mark.process
def test_cli_rejects_a_bad_config_file(tmp_path: Path, content: str | None, expected: str) -> None:
    """A config file that cannot be applied stops the start with exit code 2 and a message
    naming the file and the problem, never a traceback."""
    config = tmp_path / "emulator.json"
    if content is not None:
        config.write_text(content)
    process, _ = start_cli("--config", str(config))
    _, err = process.communicate(timeout=20)
    assert process.returncode == 2, err
    assert str(config) in err
    assert expected in err
    assert "Traceback" not in err


@pytest.mark.process
def test_cli_binds_loopback_by_default() -> None:
    """Without --host the emulator listens on 127.0.0.1 only."""
    process, ready = start_cli("--log-level", "warning")
    try:
        assert " 127.0.0.1:" in ready
        client = client_for(ready.split("gRPC ", 1)[1].split(",", 1)[0])
        assert list(client.list_queues(parent=PARENT)) == []
        client.transport.close()
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=10)
