"""A service account that one Cloud Run service runs as."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp


@dataclass(frozen=True)
class ServiceIdentityArgs:
    project: str
    account_id: str
    display_name: str
    can_act_as_itself: bool = False
    """Grant the account ``roles/iam.serviceAccountUser`` on itself. A service that creates
    Cloud Tasks with an OIDC token naming its own account needs exactly this: Cloud Tasks
    checks that the caller of CreateTask may act as the token's account."""
    requires: Sequence[pulumi.Resource] = field(default_factory=list)


class ServiceIdentity(pulumi.ComponentResource):
    """Exposes ``email`` (what Cloud Run and OIDC tokens name), ``account_name`` (the
    account's full resource name, what IAM on the account itself takes) and ``member``."""

    email: pulumi.Output[str]
    account_name: pulumi.Output[str]
    member: pulumi.Output[str]

    def __init__(
        self, name: str, args: ServiceIdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        if not 6 <= len(args.account_id) <= 30:
            raise ValueError(
                f"ServiceIdentity account_id = {args.account_id!r}: must be 6-30 characters"
            )
        super().__init__("cloud-run-tasks:identity:ServiceIdentity", name, None, opts)
        self.account = gcp.serviceaccount.Account(
            f"{name}-sa",
            project=args.project,
            account_id=args.account_id,
            display_name=args.display_name,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.requires)),
        )
        self.email = self.account.email
        self.account_name = self.account.name
        self.member = pulumi.Output.concat("serviceAccount:", self.account.email)
        if args.can_act_as_itself:
            gcp.serviceaccount.IAMMember(
                f"{name}-sa-user-self",
                # The account's resource NAME: an email here would address nothing.
                service_account_id=self.account.name,
                role="roles/iam.serviceAccountUser",
                member=self.member,
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"email": self.email, "account_name": self.account_name})
