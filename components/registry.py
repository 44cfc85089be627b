"""The Artifact Registry Docker repository that holds both service images."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_gcp as gcp

THIRTY_DAYS = "2592000s"
PROMOTED_TAG_PREFIX = "prod-"
"""The deploy workflow tags each image it promotes to prod ``prod-<run number>`` in this
registry before prod runs it; a KEEP rule protects every such tag from the cleanup."""


@dataclass(frozen=True)
class ImageRegistryArgs:
    project: str
    location: str
    """A multi-region such as ``us`` or a region such as ``us-central1``."""
    repository_id: str
    keep_versions: int
    """The newest versions of each image are kept whatever their age."""
    delete_older_than: str = THIRTY_DAYS
    keep_tag_prefixes: Sequence[str] = (PROMOTED_TAG_PREFIX,)
    """Versions tagged with one of these prefixes are kept whatever their age and rank:
    another environment runs them by digest, which the cleanup cannot see."""
    requires: Sequence[pulumi.Resource] = field(default_factory=list)
    """Resources that must exist first (the Artifact Registry API)."""


class ImageRegistry(pulumi.ComponentResource):
    """A Docker repository with a cleanup policy, so that a build per deploy does not grow
    the registry (and its bill) forever."""

    host: str
    """The registry host Docker logs in to, such as ``us-docker.pkg.dev``."""
    url: pulumi.Output[str]
    """Where images are pushed: ``HOST/PROJECT/REPOSITORY``."""

    def __init__(
        self, name: str, args: ImageRegistryArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        if args.keep_versions < 1:
            raise ValueError(
                f"ImageRegistry keep_versions = {args.keep_versions}: must be at least 1, "
                "or the image being deployed could be cleaned up"
            )
        if not re.fullmatch(r"\d+s", args.delete_older_than):
            raise ValueError(
                f"ImageRegistry delete_older_than = {args.delete_older_than!r}: "
                "must be whole seconds such as '2592000s'"
            )
        bad = [p for p in args.keep_tag_prefixes if not re.fullmatch(r"[A-Za-z0-9_][\w.-]*", p)]
        if bad:
            raise ValueError(
                f"ImageRegistry keep_tag_prefixes {bad!r}: each must start a Docker tag "
                "(letters, digits, '_', '.', '-')"
            )
        super().__init__("cloud-run-tasks:registry:ImageRegistry", name, None, opts)
        # A version matching both a KEEP and a DELETE rule is kept.
        keep_tagged = []
        if args.keep_tag_prefixes:
            keep_tagged.append(
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="keep-promoted",
                    action="KEEP",
                    condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                        tag_state="TAGGED",
                        tag_prefixes=list(args.keep_tag_prefixes),
                    ),
                )
            )
        self.repository = gcp.artifactregistry.Repository(
            f"{name}-repository",
            project=args.project,
            location=args.location,
            repository_id=args.repository_id,
            format="DOCKER",
            description="Images of the task-app and worker Cloud Run services.",
            cleanup_policy_dry_run=False,
            cleanup_policies=[
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="keep-recent",
                    action="KEEP",
                    most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                        keep_count=args.keep_versions,
                    ),
                ),
                *keep_tagged,
                gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                    id="delete-old",
                    action="DELETE",
                    condition=gcp.artifactregistry.RepositoryCleanupPolicyConditionArgs(
                        tag_state="ANY",
                        older_than=args.delete_older_than,
                    ),
                ),
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.requires)),
        )
        self.host = f"{args.location}-docker.pkg.dev"
        self.url = self.repository.registry_uri
        self.register_outputs({"url": self.url})
