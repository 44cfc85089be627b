"""The error the API answers with: a gRPC status code and the real service's message.

The real service's texts live in ``data/error_texts.json``, each with its status and the
recording it was taken from; ``api_error(key, ...)`` is the only way code raises one.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import grpc

_CODES = {code.name: code for code in grpc.StatusCode}


class ApiError(Exception):
    """Raised by the engine; the call path turns it into the call's status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@cache
def error_texts() -> dict[str, dict[str, str]]:
    """Key -> {"status", "text", "source"}: the real service's answers."""
    raw = resources.files(__package__).joinpath("data/error_texts.json").read_text("utf-8")
    texts: dict[str, dict[str, str]] = json.loads(raw)["texts"]
    return texts


def api_error(key: str, **values: Any) -> ApiError:
    """The real service's answer ``key`` of the table, its placeholders filled in."""
    entry = error_texts()[key]
    return ApiError(_CODES[entry["status"]], entry["text"].format(**values))


def invalid(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)
