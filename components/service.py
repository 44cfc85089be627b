"""A Cloud Run (v2) service: its container, its scaling, its ingress and who may invoke it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import pulumi
import pulumi_gcp as gcp

from stack_settings import memory_problem

CPU_CHOICES = {1, 2, 4, 6, 8}
INGRESS = {
    "all": "INGRESS_TRAFFIC_ALL",
    # Admits Cloud Tasks (and other Google services) of the same project, not the internet.
    "internal": "INGRESS_TRAFFIC_INTERNAL_ONLY",
}
PUBLIC_MEMBERS = {"allUsers", "allAuthenticatedUsers"}
_MEMORY = re.compile(r"^[1-9]\d*(Mi|Gi)$")

# Besides the URL `uri` returns, every Cloud Run service answers at a URL known before it
# exists, built from its name, its project's NUMBER and its region:
# https://cloud.google.com/run/docs/triggering/https-request#deterministic
DETERMINISTIC_URL = "https://{service}-{project_number}.{region}.run.app"


def deterministic_url(
    service_name: str, project_number: pulumi.Input[str], region: str
) -> pulumi.Output[str]:
    """The service's deterministic URL: what a service can be told about itself (or a
    caller about it) without waiting for the service, so without a dependency cycle."""
    head, tail = DETERMINISTIC_URL.split("{project_number}")
    return pulumi.Output.concat(
        head.format(service=service_name), project_number, tail.format(region=region)
    )


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class SecretEnv:
    """An environment variable whose value Cloud Run reads from Secret Manager at start."""

    secret: pulumi.Input[str]
    version: pulumi.Input[str]


@dataclass(frozen=True)
class CloudRunServiceArgs:
    project: str
    location: str
    service_name: str
    image: pulumi.Input[str]
    """An image reference by digest."""
    service_account: pulumi.Input[str]
    """Email of the identity the service runs as."""
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    secret_env: Mapping[str, SecretEnv] = field(default_factory=dict)
    cpu: int = 1
    memory: str = "512Mi"
    cpu_idle: bool = True
    """CPU only while a request is handled; the services do all their work in requests."""
    concurrency: int = 80
    """Requests one instance is sent at once; match what the container can serve."""
    timeout_seconds: int | None = None
    """Request timeout; None keeps Cloud Run's default (300 s)."""
    min_instances: int = 0
    max_instances: int = 10
    ingress: Literal["all", "internal"] = "internal"
    public: bool = False
    """Let anyone on the internet invoke the service (an allUsers invoker grant)."""
    invokers: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """IAM members allowed to invoke it, keyed by a label that names the grant."""
    health_path: str = "/healthz"
    deletion_protection: bool = True
    requires: Sequence[pulumi.Resource] = field(default_factory=list)


class CloudRunService(pulumi.ComponentResource):
    """Private unless ``public`` is set. Exposes ``uri``, the service's URL."""

    uri: pulumi.Output[str]

    def __init__(
        self, name: str, args: CloudRunServiceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        _check(name, args)
        super().__init__("cloud-run-tasks:service:CloudRunService", name, None, opts)
        envs = [
            gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(name=key, value=value)
            for key, value in args.env.items()
        ] + [
            gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(
                name=key,
                value_source=gcp.cloudrunv2.ServiceTemplateContainerEnvValueSourceArgs(
                    secret_key_ref=gcp.cloudrunv2.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs(
                        secret=ref.secret, version=ref.version
                    )
                ),
            )
            for key, ref in args.secret_env.items()
        ]
        self.service = gcp.cloudrunv2.Service(
            f"{name}-service",
            project=args.project,
            location=args.location,
            name=args.service_name,
            ingress=INGRESS[args.ingress],
            deletion_protection=args.deletion_protection,
            template=gcp.cloudrunv2.ServiceTemplateArgs(
                service_account=args.service_account,
                timeout=None if args.timeout_seconds is None else f"{args.timeout_seconds}s",
                max_instance_request_concurrency=args.concurrency,
                scaling=gcp.cloudrunv2.ServiceTemplateScalingArgs(
                    min_instance_count=args.min_instances,
                    max_instance_count=args.max_instances,
                ),
                containers=[
                    gcp.cloudrunv2.ServiceTemplateContainerArgs(
                        image=args.image,
                        envs=envs,
                        resources=gcp.cloudrunv2.ServiceTemplateContainerResourcesArgs(
                            limits={"cpu": str(args.cpu), "memory": args.memory},
                            # Explicit: once limits are set, leaving it out loses the
                            # request-only CPU default.
                            cpu_idle=args.cpu_idle,
                        ),
                        startup_probe=gcp.cloudrunv2.ServiceTemplateContainerStartupProbeArgs(
                            http_get=gcp.cloudrunv2.ServiceTemplateContainerStartupProbeHttpGetArgs(
                                path=args.health_path
                            ),
                            period_seconds=3,
                            failure_threshold=10,
                        ),
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.requires)),
        )
        child = pulumi.ResourceOptions(parent=self)
        if args.public:
            gcp.cloudrunv2.ServiceIamMember(
                f"{name}-invoker-public",
                project=args.project,
                location=args.location,
                name=self.service.name,
                role="roles/run.invoker",
                member="allUsers",
                opts=child,
            )
        for label, member in args.invokers.items():
            gcp.cloudrunv2.ServiceIamMember(
                f"{name}-invoker-{label}",
                project=args.project,
                location=args.location,
                name=self.service.name,
                role="roles/run.invoker",
                member=member,
                opts=child,
            )
        self.uri = self.service.uri
        self.register_outputs({"uri": self.uri})


def _resource_problems(args: CloudRunServiceArgs) -> list[str]:
    """CPU, memory (within what the CPUs allow), concurrency, timeout and scaling."""
    problems = []
    if args.cpu not in CPU_CHOICES:
        problems.append(f"cpu = {args.cpu!r}: must be one of 1, 2, 4, 6, 8")
    if not _MEMORY.match(args.memory):
        problems.append(f"memory = {args.memory!r}: must be like 512Mi or 2Gi")
    elif args.cpu in CPU_CHOICES:
        amount = int(args.memory[:-2]) * (1024 if args.memory.endswith("Gi") else 1)
        if problem := memory_problem(args.cpu, amount):
            problems.append(f"memory = {args.memory!r}: {problem}")
    if not 1 <= args.concurrency <= 1000:
        problems.append(f"concurrency = {args.concurrency}: must be from 1 to 1000")
    if args.timeout_seconds is not None and not 1 <= args.timeout_seconds <= 3600:
        problems.append(f"timeout_seconds = {args.timeout_seconds}: must be from 1 to 3600")
    if not 0 <= args.min_instances <= args.max_instances or args.max_instances < 1:
        problems.append(
            f"min_instances = {args.min_instances}, max_instances = {args.max_instances}: "
            "need 0 <= min <= max and max >= 1"
        )
    return problems


def _access_problems(args: CloudRunServiceArgs) -> list[str]:
    """Ingress, invokers (public only through the explicit flag), environment and probe."""
    problems = []
    if args.ingress not in INGRESS:
        problems.append(f"ingress = {args.ingress!r}: must be one of {sorted(INGRESS)}")
    public_invokers = [m for m in args.invokers.values() if m in PUBLIC_MEMBERS]
    if public_invokers:
        problems.append(
            f"invokers {public_invokers!r}: public access is the explicit `public` flag only"
        )
    clashing = set(args.env) & set(args.secret_env)
    bad_names = [k for k in [*args.env, *args.secret_env] if not _ENV_NAME.match(k)]
    if clashing or bad_names:
        problems.append(
            f"environment names {sorted(clashing | set(bad_names))!r}: must be distinct identifiers"
        )
    if not args.health_path.startswith("/"):
        problems.append(f"health_path = {args.health_path!r}: must start with /")
    return problems


def _check(name: str, args: CloudRunServiceArgs) -> None:
    """Every argument problem at once, each naming the value and what is allowed."""
    problems = _resource_problems(args) + _access_problems(args)
    if problems:
        raise ValueError(f"CloudRunService {name}: " + "; ".join(problems))
