"""The Pulumi SDK internals the review runner relies on, in one typed place.

Rendering a program offline needs more than ``pulumi.runtime.Mocks``: the mock engine's
monitor (to record every registration with its dependencies), the wire format of property
values, running a program function as the CLI would, and the root stack's outputs. These
are not public API and may change in any release, so the project pins ``pulumi`` below the
next major version and touches them only here: when an upgrade breaks one, this module and
``tests/review`` say so at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from pulumi.runtime import rpc as _rpc
from pulumi.runtime import settings as _settings
from pulumi.runtime import stack as _stack
from pulumi.runtime.mocks import MockMonitor

__all__ = [
    "MockMonitor",
    "deserialize_properties",
    "is_secret",
    "massage",
    "monitor_call",
    "root_resource",
    "run_program",
    "unwrap_secret",
]

_Call = Callable[[MockMonitor, Any], Any]


def monitor_call(method: str) -> _Call:
    """The mock monitor's own handler for a resource-monitor RPC, for a subclass to wrap."""
    return cast(_Call, getattr(MockMonitor, method))


def deserialize_properties(struct: Any) -> Any:
    """A protobuf Struct of the engine's wire format -> plain Python values."""
    return cast(Callable[[Any], Any], _rpc.deserialize_properties)(struct)


def is_secret(value: Any) -> bool:
    """Whether a deserialized value is the wire format's secret wrapper."""
    return bool(_rpc.is_rpc_secret(value))


def unwrap_secret(value: Any) -> Any:
    """The value inside the wire format's secret wrapper."""
    return _rpc.unwrap_rpc_secret(value)


def run_program(program: Callable[[], None]) -> Awaitable[Any]:
    """Run a program function as the CLI does: to completion of every registration."""
    return cast(Callable[[Callable[[], None]], Awaitable[Any]], _stack.run_pulumi_func)(program)


def root_resource() -> Any | None:
    """The root stack resource of the current run, holding its exported outputs."""
    return cast(Callable[[], Any], _settings.get_root_resource)()


def massage(value: Any) -> Any:
    """An exported value as the CLI would record it (resources become their outputs)."""
    return cast(Callable[[Any, list[Any]], Any], _stack.massage)(value, [])
