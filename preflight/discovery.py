"""Google's API discovery documents, as google-api-python-client ships them (offline).

A document describes every request body (``schemas``: each field's type, format, enum,
whether it is output only, and a description that often states its limits) and every
method (``resources``: path parameters with the pattern a resource name must match).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from googleapiclient.discovery_cache import get_static_doc

Schema = dict[str, Any]


@cache
def document(api: str) -> dict[str, Any]:
    """``run.v2`` -> the shipped discovery document of Cloud Run Admin API v2."""
    name, _, version = api.partition(".")
    text = get_static_doc(name, version)
    if text is None:
        raise LookupError(f"google-api-python-client ships no discovery document for {api}")
    doc: dict[str, Any] = json.loads(text)
    return doc


def revision(api: str) -> str:
    """The document's revision (a date, such as 20261031)."""
    return str(document(api).get("revision", "?"))


def schema(api: str, name: str) -> Schema:
    schemas = document(api)["schemas"]
    if name not in schemas:
        raise LookupError(f"{api} has no schema {name}")
    found: Schema = schemas[name]
    return found


def field(api: str, target: str) -> Schema:
    """``Schema.field`` -> that property of the schema."""
    schema_name, _, field_name = target.partition(".")
    properties = schema(api, schema_name).get("properties", {})
    if field_name not in properties:
        raise LookupError(f"{api} schema {schema_name} has no field {field_name}")
    found: Schema = properties[field_name]
    return found


def method(api: str, method_id: str) -> dict[str, Any]:
    """A method by its id (``cloudtasks.projects.locations.queues.get``)."""

    def walk(node: dict[str, Any]) -> dict[str, Any] | None:
        for candidate in node.get("methods", {}).values():
            if candidate.get("id") == method_id:
                return dict(candidate)
        for child in node.get("resources", {}).values():
            if (found := walk(child)) is not None:
                return found
        return None

    found = walk(document(api))
    if found is None:
        raise LookupError(f"{api} has no method {method_id}")
    return found


def parameter(api: str, method_id: str, name: str) -> Schema:
    parameters = method(api, method_id).get("parameters", {})
    if name not in parameters:
        raise LookupError(f"{api} method {method_id} has no parameter {name}")
    found: Schema = parameters[name]
    return found


def description(api: str, where: str) -> str:
    """The description of ``Schema.field`` or of ``method:METHOD_ID:PARAMETER``."""
    if where.startswith("method:"):
        _, method_id, name = where.split(":", 2)
        return str(parameter(api, method_id, name).get("description", ""))
    return str(field(api, where).get("description", ""))
