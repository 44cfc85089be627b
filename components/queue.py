"""The Cloud Tasks queue: its rate limits, its retry policy and who may add tasks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp
from service_common.queue_spec import QueueSpec, format_duration


@dataclass(frozen=True)
class TaskQueueArgs:
    project: str
    location: str
    queue_name: str
    spec: QueueSpec
    """Rate limits, retry configuration and logging: the stack's one typed form of them,
    which the local emulator gets too."""
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
        ratio = args.spec.logging_sampling_ratio
        if ratio is not None and not 0 <= ratio <= 1:
            raise ValueError(f"TaskQueue logging_sampling_ratio = {ratio}: must be from 0.0 to 1.0")
        super().__init__("cloud-run-tasks:queue:TaskQueue", name, None, opts)
        rates, retry = args.spec.rate_limits, args.spec.retry_config
        self.queue = gcp.cloudtasks.Queue(
            f"{name}-queue",
            project=args.project,
            location=args.location,
            name=args.queue_name,
            # max_burst_size is not set: the service picks it from the rate.
            rate_limits=gcp.cloudtasks.QueueRateLimitsArgs(
                max_dispatches_per_second=rates.max_dispatches_per_second,
                max_concurrent_dispatches=rates.max_concurrent_dispatches,
            ),
            retry_config=gcp.cloudtasks.QueueRetryConfigArgs(
                max_attempts=retry.max_attempts,
                min_backoff=format_duration(retry.min_backoff),
                max_backoff=format_duration(retry.max_backoff),
                max_doublings=retry.max_doublings,
                max_retry_duration=format_duration(retry.max_retry_duration),
            ),
            stackdriver_logging_config=(
                None
                if ratio is None
                else gcp.cloudtasks.QueueStackdriverLoggingConfigArgs(sampling_ratio=ratio)
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
