"""CrossGuard entry point: wraps each rule of ``stack_rules`` in a Pulumi policy.

Run by the Pulumi CLI (``pulumi preview --policy-pack policy``), which installs
``requirements.txt`` into ``policy/venv`` and executes this directory. The rules live in
``stack_rules.py`` without any Pulumi import so the project's tests can call them directly;
this file only adapts CrossGuard's argument objects to them.

Stack awareness: each resource's URN names its stack (``urn:pulumi:prod::...``); the
deletion-protection rule applies to the stacks listed in its ``protectedStacks`` config
(default: prod).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import pulumi
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyPack,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from stack_rules import (
    DEFAULT_PROTECTED_STACKS,
    DEFAULT_PUBLIC_INVOKER_SERVICES,
    RULES,
    Rule,
    RuleContext,
    StackResource,
)

PACK_NAME = "cloud-run-tasks-security"

CONFIG_PROPERTIES: dict[str, dict[str, Any]] = {
    "publicInvokerServices": {
        "type": "array",
        "items": {"type": "string"},
        "default": list(DEFAULT_PUBLIC_INVOKER_SERVICES),
        "description": "Cloud Run services whose roles/run.invoker may go to allUsers.",
    },
    "protectedStacks": {
        "type": "array",
        "items": {"type": "string"},
        "default": list(DEFAULT_PROTECTED_STACKS),
        "description": "Stacks that must keep deletion protection on.",
    },
}


def stack_of(urn: str) -> str:
    """The stack a resource belongs to, from its URN (``urn:pulumi:STACK::PROJECT::...``);
    failing that, the stack the CLI names in the analyzer's environment. Empty when neither
    tells (the deletion-protection rule then errs towards protection)."""
    if urn.startswith("urn:pulumi:") and "::" in urn:
        return urn.removeprefix("urn:pulumi:").split("::", 1)[0]
    if os.environ.get("PULUMI_STACK"):
        return os.environ["PULUMI_STACK"]
    try:
        return pulumi.get_stack()
    except Exception:  # an unconfigured runtime has no stack to report
        return ""


def _context(config: Mapping[str, Any], urn: str) -> RuleContext:
    return RuleContext.from_config(stack_of(urn), config)


def _schema(rule: Rule) -> PolicyConfigSchema | None:
    if not rule.uses_config:
        return None
    return PolicyConfigSchema(properties={key: CONFIG_PROPERTIES[key] for key in rule.uses_config})


def resource_validation(
    rule: Rule,
) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    """A CrossGuard resource validation that reports each message of ``rule``."""
    check: Any = rule.check

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(args.resource_type, args.props, _context(args.get_config(), args.urn)):
            report_violation(message, None)

    return validate


def stack_validation(rule: Rule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    """A CrossGuard stack validation over every resource's outputs."""
    check: Any = rule.check

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [StackResource(r.resource_type, r.props, r.urn, r.name) for r in args.resources]
        first_urn = resources[0].urn if resources else ""
        for message, urn in check(resources, _context(args.get_config(), first_urn)):
            report_violation(message, urn or None)

    return validate


def build_policies() -> list[ResourceValidationPolicy | StackValidationPolicy]:
    """One mandatory CrossGuard policy per rule, in the rules' order."""
    policies: list[ResourceValidationPolicy | StackValidationPolicy] = []
    for rule in RULES:
        if rule.kind == "stack":
            policy_type: type[Any] = StackValidationPolicy
            validate: Any = stack_validation(rule)
        else:
            policy_type, validate = ResourceValidationPolicy, resource_validation(rule)
        policies.append(
            policy_type(
                name=rule.name,
                description=rule.description,
                validate=validate,
                enforcement_level=EnforcementLevel.MANDATORY,
                config_schema=_schema(rule),
            )
        )
    return policies


if __name__ == "__main__":
    # PolicyPack serves the analyzer over gRPC and blocks until the CLI stops it.
    PolicyPack(
        name=PACK_NAME,
        enforcement_level=EnforcementLevel.MANDATORY,
        policies=build_policies(),
    )
