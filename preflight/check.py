"""Holds every value a stack declares to what Google's APIs accept.

For each resource the program declares (one mock run, as ``stack_review`` records it), the
inputs are walked beside the request body's schema in the API's discovery document: an
unknown field, a field Google only reports (output only), a wrong type, a value outside
its format (durations such as ``15s``, int32, RFC 3339 times), outside its enum, or
outside a limit Google documents (``rules.json``) is a problem. Resource names built from
identifiers must match the API method's path pattern. Cloud Run's CPU and memory rules,
which no document carries, are checked from ``rules.json`` too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

from preflight import discovery
from preflight.mapping import MAPPINGS, NOT_GOOGLE_APIS, ApiMapping
from stack_review.runner import RecordedResource, StackRun, run_stack
from stack_settings import PROJECT_DIR, cloud_run_limits_source, memory_by_cpu, show_mib

RULES_FILE = Path(__file__).resolve().parent / "rules.json"

_DURATION = re.compile(r"-?\d+(\.\d{1,9})?s")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)(k|M|G|T|Ki|Mi|Gi|Ti)?")
_MEMORY_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_CPU = re.compile(r"(\d+(?:\.\d+)?)(m)?")
MIB = 2**20


@dataclass(frozen=True, order=True)
class Problem:
    """One value Google would refuse or ignore."""

    stack: str
    resource: str
    type: str
    field: str
    """The input's path as the program declares it (camelCase, as the engine records it)."""
    value: str
    allowed: str
    """What Google allows there."""
    source: str
    """Where Google says so."""

    def render(self) -> str:
        return (
            f"{self.stack}: {self.resource} ({self.type})\n"
            f"    {self.field} = {self.value}\n"
            f"    Google allows: {self.allowed}\n"
            f"    per {self.source}"
        )


class _Place(NamedTuple):
    """Where the walk is: the API, the schema field (``Schema.field``) or rule target, the
    field holding the current object (``startupProbe``), and the input's path shown to
    the user and the one mapping.py is keyed by (``[]`` for indices)."""

    api: str
    where: str
    holder: str | None
    path: str
    npath: str

    def item(self, index: int) -> _Place:
        return self._replace(path=f"{self.path}[{index}]", npath=f"{self.npath}[]")


@dataclass(frozen=True)
class Rule:
    at: tuple[str, ...]
    spec: dict[str, Any]
    source: str


@cache
def rules_data() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RULES_FILE.read_text())
    return data


def _source(source: dict[str, str]) -> str:
    if "url" in source:
        return source["url"]
    api, _, where = source["discovery"].partition(":")
    return f"the {api} discovery document ({where}): {source['quote']!r}"


@cache
def _rules() -> dict[str, list[Rule]]:
    index: dict[str, list[Rule]] = {}
    for entry in rules_data()["rules"]:
        at = entry["at"]
        places = tuple(at) if isinstance(at, list) else (at,)
        spec = {k: v for k, v in entry.items() if k not in {"at", "source"}}
        rule = Rule(at=places, spec=spec, source=_source(entry["source"]))
        for place in places:
            index.setdefault(place, []).append(rule)
    return index


@cache
def _relations() -> dict[str, list[dict[str, Any]]]:
    index: dict[str, list[dict[str, Any]]] = {}
    for entry in rules_data()["relations"]:
        index.setdefault(entry["at"], []).append(entry)
    return index


def memory_bytes(text: str) -> int | None:
    """Kubernetes-style quantity (``512Mi``, ``1G``, ``2147483648``) -> bytes."""
    match = _MEMORY.fullmatch(str(text))
    if match is None:
        return None
    return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])


def size(text: str) -> int:
    """A size the rules data states (``4Gi``) -> bytes; a typo in the data fails loudly."""
    found = memory_bytes(text)
    if found is None:
        raise ValueError(f"{RULES_FILE.name}: {text!r} is not a memory size")
    return found


def cpu_count(text: str) -> float | None:
    """``1``, ``0.5``, ``500m`` -> CPUs."""
    match = _CPU.fullmatch(str(text))
    if match is None:
        return None
    value = float(match.group(1))
    return value / 1000 if match.group(2) else value


def duration_seconds(text: str) -> float | None:
    if not isinstance(text, str) or _DURATION.fullmatch(text) is None:
        return None
    return float(text[:-1])


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _shown(value: Any) -> str:
    return json.dumps(value, default=str) if not isinstance(value, str) else repr(value)


def _schema_where(api: str, where: str) -> str:
    return f"the {api} discovery document (revision {discovery.revision(api)}), {where}"


class _ResourceCheck:
    """The problems of one resource's inputs."""

    def __init__(
        self, stack: str, resource: RecordedResource, mapping: ApiMapping, project: str
    ) -> None:
        self.stack = stack
        self.resource = resource
        self.mapping = mapping
        self.project = project
        self.problems: list[Problem] = []

    def report(self, path: str, value: Any, allowed: str, source: str) -> None:
        secret = any(
            path == secret or path.startswith(f"{secret}.") or path.startswith(f"{secret}[")
            for secret in self.resource.secret_paths
        )
        self.problems.append(
            Problem(
                stack=self.stack,
                resource=self.resource.name,
                type=self.resource.type,
                field=path,
                value="[secret]" if secret else _shown(value),
                allowed=allowed,
                source=source,
            )
        )

    # ---- walking the body beside its schema ------------------------------------------

    def run(self) -> list[Problem]:
        inputs = self.resource.inputs
        api = self.mapping.api
        body = {k: v for k, v in inputs.items() if k not in self.mapping.provider_only}
        self.check_object(_Place(api, self.mapping.schema, None, "", ""), self.mapping.schema, body)
        for key, target in self.mapping.ids.items():
            if isinstance(inputs.get(key), str):
                place = _Place(api, target, None, key, key)
                self.apply_rules(place, inputs[key], {"type": "string"})
        for key, target in self.mapping.body_fields.items():
            if key in inputs:
                place = _Place(api, target, None, key, key)
                self.check_value(place, discovery.field(api, target), inputs[key])
        for key, target in self.mapping.enums.items():
            if key in inputs:
                place = _Place(api, target, None, key, key)
                self.check_enum(place, discovery.field(api, target), inputs[key])
        self.check_names()
        self.check_carried_env()
        return self.problems

    def check_object(self, place: _Place, schema_name: str, obj: dict[str, Any]) -> None:
        """The fields of one object of schema ``schema_name``, found at ``place``."""
        api = place.api
        holder = place.where.rpartition(".")[2] if place.path else None
        for key, value in obj.items():
            if value is None:
                continue
            npath = _join(place.npath, key)
            api_name = self.mapping.renames.get(npath, key)
            owner = schema_name
            properties = discovery.schema(api, owner).get("properties", {})
            *parents, name = api_name.split(".")
            for parent in parents:
                owner = properties[parent]["$ref"]
                properties = discovery.schema(api, owner).get("properties", {})
            child = _Place(api, f"{owner}.{name}", holder, _join(place.path, key), npath)
            if name not in properties:
                self.report(
                    child.path,
                    value,
                    f"no field {name!r} in {owner}; its fields: {', '.join(sorted(properties))}"
                    " (if the provider sends this input under another name, teach"
                    " preflight/mapping.py)",
                    _schema_where(api, owner),
                )
                continue
            self.check_value(child, properties[name], value, self.mapping.shapes.get(npath))
        for relation in _relations().get(f"{api}:{schema_name}", []):
            self.check_relation(place, schema_name, obj, relation)
        special = _SPECIAL.get(f"{api}:{schema_name}")
        if special is not None:
            special(self, obj, place.path)

    def check_value(
        self, place: _Place, prop: dict[str, Any], value: Any, shape: str | None = None
    ) -> None:
        source = _schema_where(place.api, place.where)
        if prop.get("readOnly"):
            self.report(
                place.path,
                value,
                "nothing: the field is output only, Google sets it and ignores what is sent",
                source,
            )
        elif shape == "list" and not isinstance(value, list):
            # One value the provider sends as a one-item list: shown as the program wrote it.
            self.check_value(place, prop.get("items", {}), value)
        elif shape is not None and shape.startswith("map:") and isinstance(value, list):
            self._check_keyed_list(place, prop, value, shape.removeprefix("map:"), source)
        elif "$ref" in prop:
            if not isinstance(value, dict):
                self.report(place.path, value, f"an object ({prop['$ref']})", source)
            else:
                self.check_object(place, prop["$ref"], value)
        elif prop.get("type") == "array":
            self._check_list(place, prop, value, source)
        elif prop.get("type") == "object":
            self._check_map(place, prop, value, source)
        elif self.check_scalar(place, prop, value):
            if "enum" in prop:
                self.check_enum(place, prop, value)
            self.apply_rules(place, value, prop)

    def _check_list(self, place: _Place, prop: dict[str, Any], value: Any, source: str) -> None:
        if not isinstance(value, list):
            self.report(place.path, value, "a list", source)
            return
        for index, item in enumerate(value):
            self.check_value(place.item(index), prop.get("items", {}), item)

    def _check_keyed_list(
        self, place: _Place, prop: dict[str, Any], value: list[Any], key: str, source: str
    ) -> None:
        """A list the provider turns into the API's map keyed by each item's ``key``."""
        for index, item in enumerate(value):
            item_place = place.item(index)
            if not isinstance(item, dict) or not isinstance(item.get(key), str):
                self.report(item_place.path, item, f"an object with a {key!r}", source)
                continue
            self.check_value(item_place, prop.get("additionalProperties", {}), item)

    def _check_map(self, place: _Place, prop: dict[str, Any], value: Any, source: str) -> None:
        """A map: its own rules, then each entry against the schema's value type."""
        if not isinstance(value, dict):
            self.report(place.path, value, "a map", source)
            return
        self.apply_rules(place, value, prop)
        additional = prop.get("additionalProperties")
        if additional is None:
            return
        for key, item in value.items():
            entry = place._replace(path=f"{place.path}.{key}", npath=f"{place.npath}.*")
            if "$ref" in additional:
                self.check_value(entry, additional, item)
            else:
                self.check_scalar(entry, additional, item)

    def check_scalar(self, place: _Place, prop: dict[str, Any], value: Any) -> bool:
        kind, fmt = prop.get("type"), prop.get("format")
        path, source = place.path, _schema_where(place.api, place.where)
        if kind == "boolean":
            ok = isinstance(value, bool)
            if not ok:
                self.report(path, value, "true or false", source)
            return ok
        if kind == "number":
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
            if not ok:
                self.report(path, value, f"a number ({fmt or 'double'})", source)
            return ok
        if kind == "integer" or fmt in {"int64", "uint64"}:
            return self.check_integer(place, value, fmt)
        if kind == "string":
            if not isinstance(value, str):
                self.report(path, value, "a string", source)
                return False
            if fmt == "google-duration" and _DURATION.fullmatch(value) is None:
                self.report(
                    path,
                    value,
                    "a duration: seconds, up to nine decimals, then 's' (such as '15s' or '0.5s')",
                    source,
                )
                return False
            if fmt == "google-datetime" and _DATETIME.fullmatch(value) is None:
                self.report(path, value, "an RFC 3339 time such as '2026-01-31T12:00:00Z'", source)
                return False
        return True

    def check_integer(self, place: _Place, value: Any, fmt: str | None) -> bool:
        number: int | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = value
        elif (isinstance(value, float) and value.is_integer()) or (
            isinstance(value, str) and fmt in {"int64", "uint64"} and re.fullmatch(r"-?\d+", value)
        ):
            number = int(value)
        low, high = _INT64 if fmt in {"int64", "uint64"} else _INT32
        if fmt == "uint64":
            low = 0
        if number is None or not low <= number <= high:
            allowed = f"a whole number from {low} to {high} ({fmt or 'int32'})"
            self.report(place.path, value, allowed, _schema_where(place.api, place.where))
            return False
        return True

    def check_enum(self, place: _Place, prop: dict[str, Any], value: Any) -> None:
        allowed = list(prop.get("enum", []))
        if value not in allowed:
            source = _schema_where(place.api, place.where)
            self.report(place.path, value, f"one of {', '.join(allowed)}", source)

    # ---- documented limits ---------------------------------------------------------------

    def apply_rules(self, place: _Place, value: Any, prop: dict[str, Any]) -> None:
        for rule in _rules().get(f"{place.api}:{place.where}", []):
            if "under" in rule.spec and rule.spec["under"] != place.holder:
                continue
            self.apply_rule(rule, place.path, value, prop)

    def apply_rule(self, rule: Rule, path: str, value: Any, prop: dict[str, Any]) -> None:
        spec, source = rule.spec, rule.source
        if spec.get("output_only"):
            self.report(
                path, value, "nothing: Google sets this field and ignores what is sent", source
            )
            return
        if "keys" in spec and isinstance(value, dict):
            unknown = sorted(set(value) - set(spec["keys"]))
            if unknown:
                self.report(path, value, f"only the keys {', '.join(spec['keys'])}", source)
        if isinstance(value, str):
            self._apply_text_rule(spec, source, path, value)
        number: float | None = None
        unit = ""
        if prop.get("format") == "google-duration":
            number, unit = duration_seconds(value), "s"
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        if number is not None:
            self._apply_range_rule(spec, source, path, value, number=number, unit=unit)

    def _apply_text_rule(self, spec: dict[str, Any], source: str, path: str, value: str) -> None:
        """A string's pattern and its length in characters and in bytes."""
        if "pattern" in spec and re.fullmatch(spec["pattern"], value) is None:
            self.report(path, value, spec.get("allowed", f"a match of {spec['pattern']}"), source)
        if "max_length" in spec and len(value) > spec["max_length"]:
            self.report(
                path, f"{len(value)} characters", f"at most {spec['max_length']} characters", source
            )
        if "min_length" in spec and len(value) < spec["min_length"]:
            self.report(path, value, f"at least {spec['min_length']} characters", source)
        if "max_bytes" in spec and len(value.encode()) > spec["max_bytes"]:
            self.report(
                path, f"{len(value.encode())} bytes", f"at most {spec['max_bytes']} bytes", source
            )

    def _apply_range_rule(
        self, spec: dict[str, Any], source: str, path: str, value: Any, *, number: float, unit: str
    ) -> None:
        """A number's (or a duration's seconds') bounds, inclusive or exclusive."""
        low, high = spec.get("min"), spec.get("max")
        if "min_exclusive" in spec and number <= spec["min_exclusive"]:
            self.report(path, value, f"more than {spec['min_exclusive']}{unit}", source)
        if (low is not None and number < low) or (high is not None and number > high):
            if low is not None and high is not None:
                allowed = f"from {low}{unit} to {high}{unit}"
            elif low is not None:
                allowed = f"at least {low}{unit}"
            else:
                allowed = f"at most {high}{unit}"
            self.report(path, value, allowed, source)

    def check_relation(
        self, place: _Place, schema_name: str, obj: dict[str, Any], relation: dict[str, Any]
    ) -> None:
        lesser, greater = relation["lesser"], relation["greater"]
        if lesser not in obj or greater not in obj:
            return
        properties = discovery.schema(place.api, schema_name)["properties"]

        def number(key: str) -> float | None:
            value = obj[key]
            if properties[key].get("format") == "google-duration":
                return duration_seconds(value)
            return float(value) if isinstance(value, int | float) else None

        low, high = number(lesser), number(greater)
        if low is None or high is None:
            return
        if low > high or (low == high and not relation["or_equal"]):
            relation_text = "at most" if relation["or_equal"] else "less than"
            self.report(
                _join(place.path, lesser),
                obj[lesser],
                f"{lesser} {relation_text} {greater} ({_shown(obj[greater])})",
                _source(relation["source"]),
            )

    # ---- resource names and values the apps carry ------------------------------------

    def check_names(self) -> None:
        inputs = self.resource.inputs
        for name in self.mapping.names:
            keys = re.findall(r"{(\w+)}", name.template)
            values = {
                key: inputs.get(key) or (self.project if key == "project" else None) for key in keys
            }
            if any(not isinstance(v, str) for v in values.values()):
                continue
            whole = [k for k in keys if k != "project" and str(values[k]).startswith("projects/")]
            built = str(values[whole[0]]) if whole else name.template.format(**values)
            parameter = discovery.parameter(self.mapping.api, name.method, name.parameter)
            pattern = parameter.get("pattern")
            if pattern and re.search(pattern, built) is None:
                fields = [k for k in keys if k != "project" or "project" in inputs]
                self.report(
                    ", ".join(fields),
                    built,
                    f"a resource name matching {pattern}",
                    _schema_where(
                        self.mapping.api, f"method {name.method}, parameter {name.parameter}"
                    ),
                )

    def check_carried_env(self) -> None:
        if not self.mapping.carried_env:
            return
        containers = (self.resource.inputs.get("template") or {}).get("containers") or []
        for i, container in enumerate(containers):
            for j, env in enumerate(container.get("envs") or []):
                carried = self.mapping.carried_env.get(env.get("name"))
                if carried is None or "value" not in env:
                    continue
                prop = discovery.field(carried.api, carried.target)
                value = f"{env['value']}{carried.unit}"
                path = f"template.containers[{i}].envs[{j}].value"
                place = _Place(
                    carried.api,
                    carried.target,
                    None,
                    f"{path} ({env['name']}, sent as {carried.target})",
                    path,
                )
                if self.check_scalar(place, prop, value):
                    self.apply_rules(place, value, prop)


# ---- Cloud Run's CPU and memory (no discovery document carries them) ------------------


def _checked_cpu(
    check: _ResourceCheck,
    limits: dict[str, Any],
    path: str,
    cpu_facts: dict[str, Any],
    table: Mapping[int, Any],
) -> float | None:
    """The CPU count of ``limits``, or None (and a report) when Cloud Run does not offer it:
    a whole count from the table, or a fraction in the documented steps below one."""
    cpu = cpu_count(limits["cpu"])
    step = cpu_facts["fractional_step"]
    fractional_ok = (
        cpu is not None
        and cpu_facts["fractional_min"] <= cpu < 1
        and abs(round(cpu / step) * step - cpu) < 1e-9
    )
    if cpu is not None and (fractional_ok or cpu in table):
        return cpu
    check.report(
        f"{path}.limits.cpu",
        limits["cpu"],
        f"{', '.join(map(str, sorted(table)))} CPUs, or from"
        f" {cpu_facts['fractional_min']} to 1 in steps of {step}",
        cpu_facts["source"],
    )
    return None


def _cloud_run_resources(check: _ResourceCheck, obj: dict[str, Any], path: str) -> None:
    """CPU and memory as Cloud Run allows them: whole CPUs and the memory each allows come
    from the stack's own table of Cloud Run's limits (the one its settings are held to);
    fractional CPUs from ``rules.json``."""
    limits = obj.get("limits")
    if not isinstance(limits, dict):
        return
    facts = rules_data()["cloud_run"]
    below_one = facts["below_one_cpu"]
    table, table_source = memory_by_cpu(), cloud_run_limits_source()
    cpu = _checked_cpu(check, limits, path, facts["cpu"], table) if "cpu" in limits else None
    if "memory" not in limits:
        return
    memory = memory_bytes(limits["memory"])
    low = min(row.min_mib for row in table.values()) * MIB
    high = max(row.max_mib for row in table.values()) * MIB
    if memory is None or not low <= memory <= high:
        check.report(
            f"{path}.limits.memory",
            limits["memory"],
            f"a size such as 512Mi or 2Gi, from {show_mib(low // MIB)} to {show_mib(high // MIB)}",
            table_source,
        )
        return
    if cpu is None:
        return
    row = table.get(int(cpu)) if cpu.is_integer() else None
    if row is not None and not row.min_mib * MIB <= memory <= row.max_mib * MIB:
        span = (
            f"at most {show_mib(row.max_mib)}"
            if row.min_mib * MIB == low
            else f"from {show_mib(row.min_mib)} to {show_mib(row.max_mib)}"
        )
        check.report(
            f"{path}.limits.memory",
            limits["memory"],
            f"{span} of memory with {int(cpu)} CPU (limits.cpu = {limits['cpu']!r})",
            table_source,
        )
    if cpu < 1:
        for rule in below_one["rules"]:
            if memory > size(rule["memory_above"]) and cpu < rule["cpu_at_least"]:
                check.report(
                    f"{path}.limits.memory",
                    limits["memory"],
                    f"more than {rule['memory_above']} only with at least"
                    f" {rule['cpu_at_least']} CPU (limits.cpu = {limits['cpu']!r})",
                    below_one["source"],
                )


def _cloud_run_template(check: _ResourceCheck, obj: dict[str, Any], path: str) -> None:
    facts = rules_data()["cloud_run"]["cpu"]
    concurrency = obj.get("maxInstanceRequestConcurrency")
    for index, container in enumerate(obj.get("containers") or []):
        limits = (container.get("resources") or {}).get("limits") or {}
        cpu = cpu_count(limits["cpu"]) if "cpu" in limits else None
        if cpu is not None and cpu < 1 and concurrency != facts["below_one_max_concurrency"]:
            check.report(
                _join(path, "maxInstanceRequestConcurrency"),
                concurrency,
                f"{facts['below_one_max_concurrency']} when a container has less than 1 CPU"
                f" (containers[{index}].resources.limits.cpu = {limits['cpu']!r})",
                facts["source"],
            )


_SPECIAL = {
    "run.v2:GoogleCloudRunV2ResourceRequirements": _cloud_run_resources,
    "run.v2:GoogleCloudRunV2RevisionTemplate": _cloud_run_template,
}


# ---- entry points ------------------------------------------------------------------------


def check_run(run: StackRun) -> list[Problem]:
    """Every problem of every resource one run of the program declared."""
    project = run.config.get("gcp:project", "")
    problems: list[Problem] = []
    for resource in run.resources:
        if not resource.custom or resource.type.startswith("pulumi:providers:"):
            continue
        if resource.type in NOT_GOOGLE_APIS:
            continue
        mapping = MAPPINGS.get(resource.type)
        if mapping is None:
            problems.append(
                Problem(
                    stack=run.stack,
                    resource=resource.name,
                    type=resource.type,
                    field="(the resource)",
                    value=resource.type,
                    allowed="a resource type preflight/mapping.py maps to its Google API",
                    source="preflight/mapping.py",
                )
            )
            continue
        problems.extend(_ResourceCheck(run.stack, resource, mapping, project).run())
    return sorted(problems)


def check_stack(stack: str) -> list[Problem]:
    """Runs the program for ``Pulumi.<stack>.yaml`` under mocks and checks what it declares."""
    return check_run(run_stack(PROJECT_DIR / f"Pulumi.{stack}.yaml"))


def render(problems: Iterable[Problem]) -> Iterator[str]:
    for problem in problems:
        yield problem.render()
