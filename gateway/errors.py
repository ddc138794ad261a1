"""The one status table, and OpenAI-style JSON error responses.

Every error answered by Sluice has the body ``{"error": {"code", "message", "type"}}``.
The table is resolved over the exception's MRO, so a subclass inherits its parent's status.
"""

from __future__ import annotations

import json
import math

from aiohttp import web

from gateway.headers import SERVER
from gateway.upstream import (
    UpstreamConnectError,
    UpstreamError,
    UpstreamResetError,
    UpstreamTimeoutError,
)
from routing.errors import (
    AdmissionRejectedError,
    InvalidBackendError,
    ModelNotFoundError,
    NoEligibleEndpointError,
    NoRouteMatchedError,
    SluiceError,
)

__all__ = ["RequestError", "error_response", "response_for"]

DEFAULT_RETRY_AFTER_S = 1

# status, and whether the answer carries Retry-After
STATUS_TABLE: dict[type[BaseException], tuple[int, bool]] = {
    NoRouteMatchedError: (404, False),
    ModelNotFoundError: (404, False),
    InvalidBackendError: (500, False),
    NoEligibleEndpointError: (503, True),
    UpstreamConnectError: (502, False),
    # Reset before the response started: like Envoy's "upstream reset before headers".
    UpstreamResetError: (503, True),
    UpstreamTimeoutError: (504, False),
    UpstreamError: (502, False),
    SluiceError: (500, False),
}

_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    421: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
}


class RequestError(SluiceError):
    """A problem with the client's request, answered with ``status`` (400, 413, 431...)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    retry_after_s: float | None = None,
    close: bool = False,
) -> web.Response:
    body = {"error": {"code": code, "message": message, "type": _TYPES.get(status, "server_error")}}
    headers = {"Server": SERVER}
    if retry_after_s is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after_s)))
    resp = web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers=headers,
    )
    if close:
        resp.force_close()
    return resp


def response_for(exc: SluiceError) -> web.Response:
    """The error response for ``exc``, looked up over its MRO in the status table."""
    if isinstance(exc, RequestError):
        return error_response(exc.status, exc.code, exc.message, close=exc.status >= 400)
    if isinstance(exc, AdmissionRejectedError):
        return error_response(exc.status, exc.reason, exc.message, retry_after_s=exc.retry_after_s)
    for cls in type(exc).__mro__:
        entry = STATUS_TABLE.get(cls)
        if entry is not None:
            status, retry = entry
            return error_response(
                status,
                exc.code,
                exc.message,
                retry_after_s=DEFAULT_RETRY_AFTER_S if retry else None,
            )
    return error_response(500, "internal_error", "internal error")
