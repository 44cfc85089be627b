"""One service's container image: built from the repository and pushed, or an existing
image promoted by digest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_docker as docker

# The user Google's registries accept with an OAuth access token as the password.
TOKEN_USERNAME = "oauth2accesstoken"  # noqa: S105 (a user name, not a password)


@dataclass(frozen=True)
class RegistryLogin:
    server: str
    """Registry host, such as ``us-docker.pkg.dev``."""
    password: pulumi.Input[str]
    """A short-lived OAuth access token of the deploying identity (never a stored key)."""
    username: str = TOKEN_USERNAME


@dataclass(frozen=True)
class ServiceImageArgs:
    repository_url: pulumi.Input[str]
    """``HOST/PROJECT/REPOSITORY``; the image is pushed to ``<repository_url>/<image>``."""
    image: str
    """Short image name, such as ``task-app``."""
    context: str
    dockerfile: str
    login: RegistryLogin | None = None
    """Needed to build and push; unused when ``prebuilt`` is given."""
    prebuilt: str = ""
    """An image reference by digest to deploy instead of building (promotion)."""
    platform: str = "linux/amd64"
    """Cloud Run runs x86-64 images, whatever machine builds them."""
    requires: Sequence[pulumi.Resource] = field(default_factory=list)


class ServiceImage(pulumi.ComponentResource):
    """Exposes ``ref``: the image by digest, so that a changed image always rolls a new Cloud
    Run revision (a tag like ``latest`` would not)."""

    ref: pulumi.Output[str]

    def __init__(
        self, name: str, args: ServiceImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        if args.prebuilt and "@sha256:" not in args.prebuilt:
            raise ValueError(
                f"ServiceImage prebuilt = {args.prebuilt!r}: must be a reference by "
                "digest (NAME@sha256:...), or the deploy would not be reproducible"
            )
        if not args.prebuilt and args.login is None:
            raise ValueError(
                f"ServiceImage {name}: building needs a registry login (or give prebuilt)"
            )
        super().__init__("cloud-run-tasks:image:ServiceImage", name, None, opts)
        login = args.login
        if args.prebuilt or login is None:
            self.ref = pulumi.Output.from_input(args.prebuilt)
        else:
            # No build args or labels that change per run: an unchanged build keeps its
            # digest, so an unchanged service is not redeployed.
            self.image = docker.Image(
                f"{name}-image",
                image_name=pulumi.Output.concat(args.repository_url, "/", args.image),
                build=docker.DockerBuildArgs(
                    context=args.context,
                    dockerfile=args.dockerfile,
                    platform=args.platform,
                ),
                registry=docker.RegistryArgs(
                    server=login.server,
                    username=login.username,
                    password=pulumi.Output.secret(login.password),
                ),
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.requires)),
            )
            self.ref = self.image.repo_digest
        self.register_outputs({"ref": self.ref})
