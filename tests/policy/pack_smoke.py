"""Loads the policy pack in its own environment and drives each policy through the real
pulumi-policy SDK, printing what happened as JSON.

Run with the interpreter of a virtualenv made from policy/requirements.txt (the project's
environment cannot hold pulumi-policy): ``VENV/bin/python tests/policy/pack_smoke.py``.
It proves that ``policy/__main__.py`` imports against the pinned SDK, that every rule is
wrapped, and that the wrappers report through CrossGuard's own argument objects, including
its read-only property proxies and its unknown-value handling during preview.
"""

from __future__ import annotations

import json
import runpy
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pulumi_policy import (
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)
from pulumi_policy.policy import PolicyCustomTimeouts, PolicyResource
from pulumi_policy.proxy import UnknownValueError, unknown_checking_proxy

PACK_DIR = Path(__file__).resolve().parents[2] / "policy"
UNKNOWN_STRING = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's unknown-string sentinel

# One resource per rule that breaks it (and, for the stack rule, two sharing an account).
BREACHES: dict[str, tuple[str, dict[str, Any]]] = {
    "worker-never-public": (
        "gcp:cloudrunv2/serviceIamMember:ServiceIamMember",
        {"name": "worker", "role": "roles/run.invoker", "member": "allUsers"},
    ),
    "public-only-as-task-app-invoker": (
        "gcp:cloudtasks/queueIamMember:QueueIamMember",
        {"name": "jobs", "role": "roles/cloudtasks.enqueuer", "member": "allUsers"},
    ),
    "iam-at-resource-level-only": (
        "gcp:projects/iAMMember:IAMMember",
        {"project": "p", "role": "roles/editor", "member": "user:someone@example.com"},
    ),
    "iam-least-privilege-roles": (
        "gcp:cloudtasks/queueIamMember:QueueIamMember",
        {"name": "jobs", "role": "roles/cloudtasks.admin", "member": "serviceAccount:a@p"},
    ),
    "cloud-run-dedicated-service-account": (
        "gcp:cloudrunv2/service:Service",
        {"name": "worker", "template": {"containers": [{"image": "x"}]}},
    ),
    "deletion-protection-in-prod": (
        "gcp:cloudrunv2/service:Service",
        {"name": "worker", "deletionProtection": False, "template": {"serviceAccount": "w@p"}},
    ),
    "queue-explicit-retry-and-rate-limits": (
        "gcp:cloudtasks/queue:Queue",
        {"name": "jobs", "rateLimits": {"maxDispatchesPerSecond": 10}},
    ),
}


def _options() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def _urn(stack: str, resource_type: str, name: str) -> str:
    return f"urn:pulumi:{stack}::cloud-run-tasks::{resource_type}::{name}"


def _resource_args(
    resource_type: str, props: dict[str, Any], stack: str = "prod"
) -> ResourceValidationArgs:
    return ResourceValidationArgs(
        resource_type,
        unknown_checking_proxy(props),
        _urn(stack, resource_type, "r"),
        "r",
        _options(),
        None,
    )


def main() -> int:
    sys.path.insert(0, str(PACK_DIR))
    # Any run name but "__main__": the pack's guard keeps it from serving gRPC.
    pack = runpy.run_path(str(PACK_DIR / "__main__.py"), run_name="pack_smoke")
    policies = pack["build_policies"]()
    reported: dict[str, list[str]] = {}
    for policy in policies:
        messages: list[str] = []

        def report(message: str, urn: str | None = None, sink: list[str] = messages) -> None:
            sink.append(message)

        if isinstance(policy, ResourceValidationPolicy):
            resource_type, props = BREACHES[policy.name]
            policy.validate(_resource_args(resource_type, props), report)
        else:
            shared = {"name": "a", "template": {"serviceAccount": "same@p.iam.gserviceaccount.com"}}
            resources = [
                PolicyResource(
                    "gcp:cloudrunv2/service:Service",
                    unknown_checking_proxy({**shared, "name": name}),
                    _urn("prod", "gcp:cloudrunv2/service:Service", name),
                    name,
                    _options(),
                    None,
                    None,
                    [],
                    {},
                )
                for name in ("task-app", "worker")
            ]
            policy.validate(StackValidationArgs(resources, {}), report)
        reported[policy.name] = messages

    # The stack comes from each resource's URN: dev may turn deletion protection off.
    protection = next(p for p in policies if p.name == "deletion-protection-in-prod")
    dev_reports: list[str] = []
    resource_type, props = BREACHES["deletion-protection-in-prod"]
    protection.validate(
        _resource_args(resource_type, props, stack="dev"),
        lambda message, urn=None: dev_reports.append(message),
    )

    # During preview a not-yet-known account raises, and the analyzer reports "can't run".
    account_policy = next(p for p in policies if p.name == "cloud-run-dedicated-service-account")
    unknown = {"name": "w", "template": {"serviceAccount": UNKNOWN_STRING}}
    try:
        account_policy.validate(
            _resource_args("gcp:cloudrunv2/service:Service", unknown), lambda *_: None
        )
        unknown_raises = False
    except UnknownValueError:
        unknown_raises = True

    print(
        json.dumps(
            {
                "policies": [p.name for p in policies],
                "reported": reported,
                "unknown_raises": unknown_raises,
                "dev_deletion_protection_reports": len(dev_reports),
                "pulumi_policy": version("pulumi-policy"),
                "protobuf": version("protobuf"),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
