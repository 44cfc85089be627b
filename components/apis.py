"""The Google Cloud APIs the stack needs, enabled in its project."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp

_API = re.compile(r"^[a-z][a-z0-9-]*\.googleapis\.com$")


@dataclass(frozen=True)
class ProjectApisArgs:
    project: str
    services: Sequence[str]
    """Service names such as ``run.googleapis.com``."""


class ProjectApis(pulumi.ComponentResource):
    """Enables each API and keeps it enabled when the stack is destroyed: other workloads
    of the project may use it, and disabling an API can break them."""

    services: dict[str, gcp.projects.Service]

    def __init__(
        self, name: str, args: ProjectApisArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        bad = [s for s in args.services if not _API.match(s)]
        if bad or len(set(args.services)) != len(args.services):
            raise ValueError(
                f"ProjectApis services {list(args.services)!r}: each must be a distinct "
                f"API name such as run.googleapis.com (bad: {bad!r})"
            )
        super().__init__("cloud-run-tasks:apis:ProjectApis", name, None, opts)
        self.services = {
            service: gcp.projects.Service(
                f"{name}-{service.split('.')[0]}",
                project=args.project,
                service=service,
                disable_on_destroy=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for service in args.services
        }
        self.register_outputs({s: api.id for s, api in self.services.items()})

    def require(self, *services: str) -> list[pulumi.Resource]:
        """The API resources a resource must wait for (its ``depends_on``)."""
        missing = [s for s in services if s not in self.services]
        if missing:
            raise KeyError(f"APIs {missing!r} are not enabled by {self._name}")
        return [self.services[s] for s in services]
