"""Exceptions of the nsbox SDK: one class per API error code, each carrying the server's message."""
from __future__ import annotations

from typing import Dict, Optional, Type


class NsboxError(Exception):
    """An error answered by the daemon: ``code`` is the API's error code, ``message`` its text."""

    code: str = ""

    def __init__(self, message: str, code: Optional[str] = None, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.status = status

    def __str__(self) -> str:
        return f"{self.message} ({self.code})" if self.code else self.message


class InvalidArgument(NsboxError):
    """The request was malformed or named something invalid (HTTP 400)."""

    code = "invalid_argument"


class Unauthorized(NsboxError):
    """No valid token: missing, unknown, expired or revoked (HTTP 401)."""

    code = "unauthenticated"


class Forbidden(NsboxError):
    """The token or session may not do this (HTTP 403)."""

    code = "permission_denied"


class NotFound(NsboxError):
    """No such sandbox, session, process, file or endpoint (HTTP 404)."""

    code = "not_found"


class Conflict(NsboxError):
    """The thing exists already or is in the wrong state (HTTP 409)."""

    code = "conflict"


class PreconditionFailed(NsboxError):
    """A conditional read's condition did not hold (HTTP 412)."""

    code = "precondition_failed"


class PayloadTooLarge(NsboxError):
    """The request or upload is larger than allowed (HTTP 413)."""

    code = "payload_too_large"


class RangeNotSatisfiable(NsboxError):
    """A read past the end of a file (HTTP 416)."""

    code = "range_not_satisfiable"


class Internal(NsboxError):
    """The daemon failed (HTTP 500)."""

    code = "internal"


class Unavailable(NsboxError):
    """The sandbox or daemon cannot serve this now (HTTP 503)."""

    code = "unavailable"


class InsufficientStorage(NsboxError):
    """The sandbox's disk is full (HTTP 507)."""

    code = "insufficient_storage"


class DaemonUnreachable(NsboxError):
    """The daemon could not be reached (no socket, refused connection, TLS failure)."""

    code = "unreachable"


class ConditionNotMet(NsboxError):
    """A process wait ended without its condition (timeout, or the process ended first); ``result`` is the answer."""

    code = "condition_not_met"

    def __init__(self, message: str, result: object) -> None:
        super().__init__(message)
        self.result = result


_BY_CODE: Dict[str, Type[NsboxError]] = {
    cls.code: cls
    for cls in (InvalidArgument, Unauthorized, Forbidden, NotFound, Conflict, PreconditionFailed, PayloadTooLarge,
                RangeNotSatisfiable, Internal, Unavailable, InsufficientStorage)
}
_BY_STATUS = {400: InvalidArgument, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 412: PreconditionFailed,
              413: PayloadTooLarge, 416: RangeNotSatisfiable, 500: Internal, 503: Unavailable, 507: InsufficientStorage}


def error_for(code: str, message: str, status: int = 0) -> NsboxError:
    """The exception for an API error code (an unknown code is a plain NsboxError, keeping it)."""
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status)
    if cls is None:
        return NsboxError(message, code, status)
    return cls(message, code or cls.code, status)
