"""The error the API answers with: a gRPC status code and the real service's message."""

from __future__ import annotations

import grpc

NOT_FOUND_MESSAGE = "Requested entity was not found."
ALREADY_EXISTS_MESSAGE = "Requested entity already exists"


class ApiError(Exception):
    """Raised by the engine; the servicer turns it into the call's status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str = NOT_FOUND_MESSAGE) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, message)


def already_exists(message: str = ALREADY_EXISTS_MESSAGE) -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, message)
