"""Runs the real Pulumi program (``__main__.py``) for one stack under GCP-shaped mocks and
records everything it declares.

Nothing is deployed and no Pulumi CLI is needed: the program runs in-process with the real
SDKs, against a mock engine that records each resource's type, name, parent, resolved
inputs, mocked outputs and dependencies, each provider function call, and the stack's
outputs. The infra tests assert on the record; the reviewed manifest is rendered from it.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import runpy
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from stack_review import pulumi_internals as internals
from stack_review.mocks import GcpMocks
from stack_settings import PROJECT, PROJECT_DIR, merged_stack_config

PROGRAM = PROJECT_DIR / "__main__.py"
SECRET_PLACEHOLDER = "[secret]"  # noqa: S105 (a placeholder, not a password)


@dataclass
class RecordedResource:
    """One resource as the program registered it and the (mock) provider answered."""

    urn: str
    type: str
    name: str
    parent: str
    """URN of the parent resource ("" for none); the stack itself is not recorded."""
    custom: bool
    """False for component resources."""
    id: str
    inputs: dict[str, Any]
    """Resolved inputs, camelCase keys as the engine sees them, secrets unwrapped."""
    outputs: dict[str, Any]
    """The provider's answer (for components: their registered outputs)."""
    dependencies: list[str]
    """URNs this resource waits for: explicit ``depends_on`` plus every input's source."""
    property_dependencies: dict[str, list[str]]
    """Per input property, the URNs its value came from."""
    secret_paths: set[str] = field(default_factory=set)
    """Dotted paths of inputs that were secrets."""
    secret_outputs: set[str] = field(default_factory=set)
    """Output keys the provider marks secret (such as a generated password's result)."""

    def redacted_inputs(self) -> dict[str, Any]:
        """Inputs with every secret value replaced by a placeholder."""
        redacted: dict[str, Any] = _redact(self.inputs, self.secret_paths, "")
        return redacted

    def redacted_outputs(self) -> dict[str, Any]:
        """Outputs with every secret value (and every secret input echoed back) replaced."""
        redacted: dict[str, Any] = _redact(
            self.outputs, self.secret_paths | self.secret_outputs, ""
        )
        return redacted


@dataclass
class RecordedCall:
    token: str
    args: dict[str, Any]
    result: dict[str, Any]


@dataclass
class StackRun:
    """Everything one run of the program declared."""

    stack: str
    config: dict[str, str]
    """The config the program was given, as the CLI gives it (every value a string)."""
    resources: list[RecordedResource]
    calls: list[RecordedCall]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def of_type(self, typ: str) -> list[RecordedResource]:
        return [r for r in self.resources if r.type == typ]

    def one(self, typ: str, **inputs: Any) -> RecordedResource:
        """The single resource of a type whose inputs match; fails loudly otherwise."""
        found = [
            r for r in self.of_type(typ) if all(r.inputs.get(k) == v for k, v in inputs.items())
        ]
        if len(found) != 1:
            raise LookupError(f"expected one {typ} with {inputs}, found {len(found)}")
        return found[0]

    def by_urn(self, urn: str) -> RecordedResource:
        for resource in self.resources:
            if resource.urn == urn:
                return resource
        raise LookupError(f"no resource {urn}")

    def children(self, parent: RecordedResource) -> list[RecordedResource]:
        return [r for r in self.resources if r.parent == parent.urn]


class ProgramFailed(Exception):
    """The program raised; ``run`` holds what it had registered until then, and the
    program's own exception is the ``__cause__``."""

    def __init__(self, error: BaseException, run: StackRun) -> None:
        super().__init__(str(error))
        self.error = error
        self.run = run


class RecordingMonitor(internals.MockMonitor):
    """Pulumi's mock engine, keeping a record of every registration."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.lock = threading.Lock()
        self.recorded: dict[str, RecordedResource] = {}
        self.calls: list[RecordedCall] = []
        self.thread_loops: list[asyncio.AbstractEventLoop] = []

    def _ensure_thread_loop(self) -> None:
        """The mock engine is called from executor threads and needs an event loop there;
        Pulumi would create one per thread and never close it. Creating it here keeps it
        in hand, so the run closes it when it ends."""
        try:
            asyncio.get_event_loop_policy().get_event_loop()
        except RuntimeError:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            with self.lock:
                self.thread_loops.append(loop)

    def close_thread_loops(self) -> None:
        with self.lock:
            loops, self.thread_loops = self.thread_loops, []
        for loop in loops:
            loop.close()

    def ReadResource(self, request: Any) -> Any:
        self._ensure_thread_loop()
        return internals.monitor_call("ReadResource")(self, request)

    def RegisterResource(self, request: Any) -> Any:
        self._ensure_thread_loop()
        response = internals.monitor_call("RegisterResource")(self, request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs, secret_paths = _unwrap(internals.deserialize_properties(request.object), "")
        registration = self.resources[response.urn]
        outputs, secret_outputs = _unwrap(dict(registration.state or {}), "")
        resource = RecordedResource(
            urn=response.urn,
            type=request.type,
            name=request.name,
            parent=request.parent,
            custom=bool(request.custom),
            id=registration.id or "",
            inputs=inputs,
            outputs=outputs,
            dependencies=list(request.dependencies),
            property_dependencies={
                key: list(deps.urns) for key, deps in request.propertyDependencies.items()
            },
            secret_paths=secret_paths,
            secret_outputs=secret_outputs | set(request.additionalSecretOutputs),
        )
        with self.lock:
            self.recorded[response.urn] = resource
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        self._ensure_thread_loop()
        outputs, _ = _unwrap(internals.deserialize_properties(request.outputs), "")
        with self.lock:
            if request.urn in self.recorded:
                self.recorded[request.urn].outputs = outputs
        return internals.monitor_call("RegisterResourceOutputs")(self, request)

    def Invoke(self, request: Any) -> Any:
        self._ensure_thread_loop()
        response = internals.monitor_call("Invoke")(self, request)
        args, _ = _unwrap(internals.deserialize_properties(request.args), "")
        returned = internals.deserialize_properties(response.__getattribute__("return"))
        result, _ = _unwrap(returned, "")
        with self.lock:
            self.calls.append(RecordedCall(token=request.tok, args=args, result=result))
        return response


def stack_name(stack_file: Path) -> str:
    """Pulumi.dev.yaml -> dev."""
    return stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")


def cli_config(
    stack_file: str | Path, overrides: Mapping[str, Any | None] | None = None
) -> dict[str, str]:
    """The config the Pulumi CLI hands the program for a stack: Pulumi.yaml's defaults under
    the stack file's values, every value a string. ``overrides`` (full keys such as
    ``cloud-run-tasks:maxAttempts``) replace values; None removes a key."""
    config: dict[str, Any] = merged_stack_config(_resolve(stack_file))
    for key, value in (overrides or {}).items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return {key: _as_cli_string(value) for key, value in config.items()}


def run_stack(
    stack_file: str | Path,
    overrides: Mapping[str, Any | None] | None = None,
    program: Path = PROGRAM,
) -> StackRun:
    """Runs ``program`` for a committed stack file and returns what it declared.

    Raises ProgramFailed (with the partial record) when the program raises."""
    path = _resolve(stack_file)
    config = cli_config(path, overrides)
    # Its own thread and a fresh context: Pulumi keeps its runtime state (root stack,
    # settings) in context variables and needs an event loop of its own, so each run
    # starts clean and leaves the caller's context and event loop untouched.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="stack-review") as runner:
        return runner.submit(
            contextvars.Context().run, _run, stack_name(path), config, program
        ).result()


def _run(stack: str, config: dict[str, str], program: Path) -> StackRun:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    monitor = RecordingMonitor(GcpMocks(project=config.get("gcp:project", "project")))
    try:
        pulumi.runtime.set_mocks(monitor.mocks, PROJECT, stack, preview=False, monitor=monitor)
        pulumi.runtime.set_all_config(config)
        error: BaseException | None = None
        try:

            def run_program() -> None:
                # As the Pulumi CLI runs it: the file itself, as the __main__ module.
                runpy.run_path(str(program), run_name="__main__")

            loop.run_until_complete(internals.run_program(run_program))
        except Exception as exc:
            error = exc
        outputs: dict[str, Any] = {}
        secret_outputs: set[str] = set()
        root = internals.root_resource()
        if error is None and root is not None:
            for key, value in getattr(root, "outputs", {}).items():
                output = pulumi.Output.from_input(internals.massage(value))
                outputs[key] = loop.run_until_complete(output.future())
                if loop.run_until_complete(output.is_secret()):
                    secret_outputs.add(key)
        # Sorted: registrations arrive from several threads in no fixed order.
        run = StackRun(
            stack=stack,
            config=config,
            resources=sorted(monitor.recorded.values(), key=lambda r: r.urn),
            calls=sorted(monitor.calls, key=lambda c: (c.token, json.dumps(c.args, default=str))),
            outputs=outputs,
            secret_outputs=secret_outputs,
        )
        if error is not None:
            raise ProgramFailed(error, run) from error
        return run
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()
        monitor.close_thread_loops()


def _resolve(stack_file: str | Path) -> Path:
    path = Path(stack_file)
    if not path.exists() and (PROJECT_DIR / path).exists():
        path = PROJECT_DIR / path
    if not path.exists():
        raise FileNotFoundError(f"stack file {stack_file} not found")
    return path


def _as_cli_string(value: Any) -> str:
    """How the CLI passes a config value: strings as they are, everything else as JSON
    (``true``, ``10``, ``0.5``)."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _unwrap(value: Any, path: str) -> tuple[Any, set[str]]:
    """Secret envelopes -> plain values, plus the dotted paths where they were."""
    if internals.is_secret(value):
        inner, inner_paths = _unwrap(internals.unwrap_secret(value), path)
        return inner, {path or "."} | inner_paths
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        paths: set[str] = set()
        for key, item in value.items():
            result[key], found = _unwrap(item, f"{path}.{key}" if path else key)
            paths |= found
        return result, paths
    if isinstance(value, list):
        items: list[Any] = []
        item_paths: set[str] = set()
        for index, item in enumerate(value):
            plain, found = _unwrap(item, f"{path}[{index}]")
            items.append(plain)
            item_paths |= found
        return items, item_paths
    return value, set()


def _redact(value: Any, secret_paths: set[str], path: str) -> Any:
    if (path or ".") in secret_paths:
        return SECRET_PLACEHOLDER
    if isinstance(value, dict):
        return {k: _redact(v, secret_paths, f"{path}.{k}" if path else k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, secret_paths, f"{path}[{i}]") for i, v in enumerate(value)]
    return value
