"""A Cloud Tasks queue: its rate limits, its retry policy, its state and who may do what
on it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp
from service_common.queue_spec import QueueSpec, format_duration

QUEUE_STATES = ("RUNNING", "PAUSED")


@dataclass(frozen=True)
class QueueGrant:
    """One predefined role granted on this queue alone to one IAM member."""

    role: str
    """Such as ``roles/cloudtasks.enqueuer``."""
    member: pulumi.Input[str]


@dataclass(frozen=True)
class TaskQueueArgs:
    project: str
    location: str
    queue_name: str
    spec: QueueSpec
    """Rate limits, retry configuration and logging: the stack's one typed form of them,
    which the local emulator gets too."""
    grants: Mapping[str, Sequence[QueueGrant]] = field(default_factory=dict)
    """Roles granted on this queue, keyed by a label that names the grantee (``task-app``);
    each grant's resource is named ``<queue>-<role's last word>-<label>``."""
    desired_state: str = "RUNNING"
    """``PAUSED`` keeps the queue's tasks (until their retention ends) and dispatches none."""
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
        retry = args.spec.retry_config
        # The provider omits a zero as unset: the cloud would apply the API's default.
        zeros = [
            name
            for name, value in (
                ("max_attempts", retry.max_attempts),
                ("max_doublings", retry.max_doublings),
                ("logging_sampling_ratio", ratio),
            )
            if value is not None and value == 0
        ]
        if zeros:
            raise ValueError(
                f"TaskQueue {', '.join(zeros)} = 0: the provider never sends 0, so the API's "
                "default would apply; see stack_settings.NEVER_SENT_ZERO for what to write"
            )
        if args.desired_state not in QUEUE_STATES:
            raise ValueError(
                f"TaskQueue desired_state = {args.desired_state!r}: must be one of {QUEUE_STATES}"
            )
        bad_roles = sorted(
            grant.role
            for grants in args.grants.values()
            for grant in grants
            if not grant.role.startswith("roles/cloudtasks.")
        )
        if bad_roles:
            raise ValueError(
                f"TaskQueue grants {bad_roles!r}: a queue grant must be a Cloud Tasks role "
                "(roles/cloudtasks.*)"
            )
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
            # Left unset for a running queue: the manifest then shows only what differs.
            desired_state=None if args.desired_state == "RUNNING" else args.desired_state,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.requires)),
        )
        for label, grants in args.grants.items():
            for grant in grants:
                gcp.cloudtasks.QueueIamMember(
                    f"{name}-{grant.role.rsplit('.', 1)[-1]}-{label}",
                    project=args.project,
                    location=args.location,
                    name=self.queue.name,
                    role=grant.role,
                    member=grant.member,
                    opts=pulumi.ResourceOptions(parent=self),
                )
        self.queue_id = self.queue.id
        self.register_outputs({"queue_id": self.queue_id})
