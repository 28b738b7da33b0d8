"""Errors in the shape OpenAI's API uses, so that OpenAI clients raise their usual exceptions."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

from ..errors import InputError, InputTooLargeError


def error_body(
    message: str, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(message, kind, param, code), status_code=status, headers=headers)


class ServiceError(Exception):
    """An error a route answers with (status, OpenAI error body)."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code

    def response(self) -> JSONResponse:
        return openai_error(self.status, self.message, self.kind, self.param, self.code)


def input_error(error: InputError, param: str | None = None) -> ServiceError:
    """The answer to bad input: 413 for a text over the input size limit, else 400."""
    if isinstance(error, InputTooLargeError):
        return ServiceError(413, str(error), param=param, code="input_too_large")
    return ServiceError(400, str(error), param=param)
