"""Reads the stack's queues back from the emulator, over its REST API.

The emulator counts as ready only once it serves every queue the stack declares; its status
line shows the rate and retry settings the emulator reports, so a person sees at a glance
that the local queues behave like the stack's. Plain HTTP and JSON: the runner itself then
imports no Google client, which keeps `make dev` quick to start.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Sequence
from typing import Any


def get_queue(rest_url: str, queue_id: str, timeout: float = 2.0) -> dict[str, Any]:
    """GET /v2/<queue> as the REST API answers it; OSError (or ValueError) while the queue
    is not there."""
    with urllib.request.urlopen(f"{rest_url}/v2/{queue_id}", timeout=timeout) as response:  # noqa: S310 (a local URL)
        queue: dict[str, Any] = json.loads(response.read())
    return queue


def describe(queue: dict[str, Any]) -> str:
    """One line with a queue's state, rate limits and retry configuration."""
    rate, retry = queue.get("rateLimits", {}), queue.get("retryConfig", {})
    text = (
        f"queue {queue['name']}: {rate.get('maxDispatchesPerSecond', 0):g}/s "
        f"(burst {rate.get('maxBurstSize')}), {rate.get('maxConcurrentDispatches')} concurrent, "
        f"{retry.get('maxAttempts')} attempts, backoff {retry.get('minBackoff')}.."
        f"{retry.get('maxBackoff')} with {retry.get('maxDoublings', 0)} doublings"
    )
    if queue.get("state") == "PAUSED":
        text += ", paused"
    return text


def describe_queues(rest_url: str, queue_ids: Sequence[str], timeout: float = 2.0) -> str:
    """The status line of every queue; raises while any of them is not served yet."""
    return "; ".join(describe(get_queue(rest_url, name, timeout)) for name in queue_ids)
