"""The Cloud Tasks queue: its rate limits, its retry policy and who may add tasks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_gcp as gcp

RATE_LIMIT_FIELDS = {"max_dispatches_per_second", "max_concurrent_dispatches"}
RETRY_FIELDS = {"max_attempts", "min_backoff", "max_backoff", "max_doublings", "max_retry_duration"}


@dataclass(frozen=True)
class TaskQueueArgs:
    project: str
    location: str
    queue_name: str
    rate_limits: Mapping[str, Any]
    """In the Cloud Tasks API's shape (``max_dispatches_per_second``, ...), as
    ``StackSettings.queue_config()`` gives it, so the local emulator gets the same queue."""
    retry_config: Mapping[str, Any]
    """Durations as strings such as ``"1s"``, as the API takes them."""
    logging_sampling_ratio: float | None = None
    """Fraction of attempts Cloud Tasks logs; None leaves queue logging off."""
    enqueuers: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """IAM members allowed to create tasks, keyed by a label that names the grant."""
    deletion_protection: bool = False
    requires: Sequence[pulumi.Resource] = field(default_factory=list)


class TaskQueue(pulumi.ComponentResource):
    """Exposes ``queue_id``, the full ``projects/P/locations/L/queues/Q`` that clients
    create tasks in."""

    queue_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: TaskQueueArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        for label, given, allowed in (
            ("rate_limits", args.rate_limits, RATE_LIMIT_FIELDS),
            ("retry_config", args.retry_config, RETRY_FIELDS),
        ):
            unknown = set(given) - allowed
            if unknown:
                # max_burst_size lands here on purpose: the service computes it, and a
                # value sent would be silently ignored.
                raise ValueError(
                    f"TaskQueue {label} fields {sorted(unknown)!r}: not settable "
                    f"(allowed: {sorted(allowed)})"
                )
        if args.logging_sampling_ratio is not None and not 0 <= args.logging_sampling_ratio <= 1:
            raise ValueError(
                f"TaskQueue logging_sampling_ratio = {args.logging_sampling_ratio}: "
                "must be from 0.0 to 1.0"
            )
        super().__init__("cloud-run-tasks:queue:TaskQueue", name, None, opts)
        self.queue = gcp.cloudtasks.Queue(
            f"{name}-queue",
            project=args.project,
            location=args.location,
            name=args.queue_name,
            rate_limits=gcp.cloudtasks.QueueRateLimitsArgs(**args.rate_limits),
            retry_config=gcp.cloudtasks.QueueRetryConfigArgs(**args.retry_config),
            stackdriver_logging_config=(
                None
                if args.logging_sampling_ratio is None
                else gcp.cloudtasks.QueueStackdriverLoggingConfigArgs(
                    sampling_ratio=args.logging_sampling_ratio
                )
            ),
            # A deleted queue's name stays unusable for about 7 days: in a protected
            # environment an accidental delete must fail instead.
            deletion_policy="PREVENT" if args.deletion_protection else "DELETE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.requires)),
        )
        for label, member in args.enqueuers.items():
            gcp.cloudtasks.QueueIamMember(
                f"{name}-enqueuer-{label}",
                project=args.project,
                location=args.location,
                name=self.queue.name,
                role="roles/cloudtasks.enqueuer",
                member=member,
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.queue_id = self.queue.id
        self.register_outputs({"queue_id": self.queue_id})
