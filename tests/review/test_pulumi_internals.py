"""The Pulumi SDK internals the review runner uses are still there, in the shape it calls.

They are not public API: an upgrade of ``pulumi`` may move or reshape any of them. This test
names each one the adapter (``stack_review.pulumi_internals``) touches and fails with the
name of what changed, rather than letting a manifest run fail somewhere deep inside Pulumi.
The project pins ``pulumi`` below the next major version and ``uv.lock`` holds the version
this test last passed at.
"""

from __future__ import annotations

import inspect
import re
import tomllib
from collections.abc import Callable
from importlib import metadata
from typing import Any

import pytest
from google.protobuf import struct_pb2
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime import stack as pulumi_stack
from pulumi.runtime.mocks import MockMonitor

from stack_review import pulumi_internals as internals
from stack_settings import PROJECT_DIR

# What the adapter calls, and the leading parameters it passes (by position).
CALLED: list[tuple[str, Callable[..., Any], list[str]]] = [
    ("pulumi.runtime.rpc.deserialize_properties", rpc.deserialize_properties, ["props_struct"]),
    ("pulumi.runtime.rpc.is_rpc_secret", rpc.is_rpc_secret, ["value"]),
    ("pulumi.runtime.rpc.unwrap_rpc_secret", rpc.unwrap_rpc_secret, ["value"]),
    ("pulumi.runtime.stack.run_pulumi_func", pulumi_stack.run_pulumi_func, ["func"]),
    ("pulumi.runtime.stack.massage", pulumi_stack.massage, ["attr", "seen"]),
    ("pulumi.runtime.settings.get_root_resource", pulumi_settings.get_root_resource, []),
    *(
        (f"MockMonitor.{name}", getattr(MockMonitor, name), ["self", "request"])
        for name in ("ReadResource", "RegisterResource", "RegisterResourceOutputs", "Invoke")
    ),
]


@pytest.mark.parametrize(("name", "function", "leading"), CALLED, ids=[c[0] for c in CALLED])
def test_each_internal_keeps_the_parameters_the_adapter_passes(
    name: str, function: Callable[..., Any], leading: list[str]
) -> None:
    parameters = list(inspect.signature(function).parameters)
    assert parameters[: len(leading)] == leading, f"{name} now takes {parameters}"
    required = [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    ]
    assert set(required) <= set(leading), f"{name} now requires {required}"


def test_run_pulumi_func_is_still_awaited() -> None:
    """The runner drives it on its own event loop."""
    assert inspect.iscoroutinefunction(pulumi_stack.run_pulumi_func)


def test_wire_values_round_trip_through_the_adapter() -> None:
    """Plain values and the secret envelope come back as the runner reads them."""
    struct = struct_pb2.Struct()
    struct.update({"name": "jobs", "count": 3, "nested": {"ok": True}})
    assert internals.deserialize_properties(struct) == {
        "name": "jobs",
        "count": 3,
        "nested": {"ok": True},
    }
    secret = {rpc._special_sig_key: rpc._special_secret_sig, "value": "hunter2"}
    assert internals.is_secret(secret)
    assert internals.unwrap_secret(secret) == "hunter2"
    assert not internals.is_secret({"value": "plain"})


def test_pulumi_is_pinned_below_the_next_major_version() -> None:
    """The adapter is tested at the locked version; a new major version must be chosen on
    purpose (and this test run at it), not picked up by a re-lock."""
    pyproject = tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())
    infra = pyproject["dependency-groups"]["infra"]
    (spec,) = [d for d in infra if isinstance(d, str) and re.match(r"pulumi[<>=]", d)]
    installed = int(metadata.version("pulumi").split(".")[0])
    assert f"<{installed + 1}" in spec.replace(" ", ""), spec
