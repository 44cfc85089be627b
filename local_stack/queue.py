"""Reads the stack's queue back from the emulator with the official Cloud Tasks client.

The emulator counts as ready only once it serves the queue the stack declares; its status
line shows the rate and retry settings the emulator reports, so a person sees at a glance
that the local queue behaves like the stack's.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import grpc
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport


def emulator_client(address: str) -> tuple[tasks_v2.CloudTasksClient, grpc.Channel]:
    """The unmodified official client on an insecure channel to a local emulator."""
    channel = grpc.insecure_channel(address)
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel)), channel


def _seconds(value: Any) -> str:
    if isinstance(value, timedelta):
        return f"{value.total_seconds():g}s"
    return str(value)


def describe_queue(address: str, queue_id: str, timeout: float = 2.0) -> str:
    """One line with the queue's rate limits and retry configuration, as the emulator
    reports them. Raises grpc/google.api_core errors while the queue is not there."""
    client, channel = emulator_client(address)
    try:
        queue = client.get_queue(name=queue_id, timeout=timeout)
    finally:
        channel.close()
    rate, retry = queue.rate_limits, queue.retry_config
    return (
        f"queue {queue.name}: {rate.max_dispatches_per_second:g}/s "
        f"(burst {rate.max_burst_size}), {rate.max_concurrent_dispatches} concurrent, "
        f"{retry.max_attempts} attempts, backoff {_seconds(retry.min_backoff)}.."
        f"{_seconds(retry.max_backoff)} with {retry.max_doublings} doublings"
    )
