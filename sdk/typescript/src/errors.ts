/** Errors of the nsbox SDK: one class per API error code, each carrying the server's message. */

/** An error answered by the daemon; `code` is the API's error code. */
export class NsboxError extends Error {
  constructor(message: string, readonly code: string = "", readonly status = 0) {
    super(message);
    this.name = new.target.name;
  }
}
/** 400: the request was malformed or named something invalid. */
export class InvalidArgumentError extends NsboxError {}
/** 401: no valid token. */
export class UnauthorizedError extends NsboxError {}
/** 403: the token or session may not do this. */
export class ForbiddenError extends NsboxError {}
/** 404: no such sandbox, session, process, file or endpoint. */
export class NotFoundError extends NsboxError {}
/** 409: it exists already or is in the wrong state. */
export class ConflictError extends NsboxError {}
/** 412: a conditional read's condition did not hold. */
export class PreconditionFailedError extends NsboxError {}
/** 413: the request or upload is too large. */
export class PayloadTooLargeError extends NsboxError {}
/** 416: a read past the end of a file. */
export class RangeNotSatisfiableError extends NsboxError {}
/** 500: the daemon failed. */
export class InternalError extends NsboxError {}
/** 503: the sandbox or daemon cannot serve this now. */
export class UnavailableError extends NsboxError {}
/** 507: the sandbox's disk is full. */
export class InsufficientStorageError extends NsboxError {}
/** The daemon could not be reached (no socket, refused, TLS failure). */
export class DaemonUnreachableError extends NsboxError {}
/** A process wait ended without its condition; `result` is the daemon's answer. */
export class ConditionNotMetError extends NsboxError {
  constructor(message: string, readonly result: unknown) {
    super(message, "condition_not_met");
  }
}

const byCode: Record<string, typeof NsboxError> = {
  invalid_argument: InvalidArgumentError,
  unauthenticated: UnauthorizedError,
  permission_denied: ForbiddenError,
  not_found: NotFoundError,
  conflict: ConflictError,
  precondition_failed: PreconditionFailedError,
  payload_too_large: PayloadTooLargeError,
  range_not_satisfiable: RangeNotSatisfiableError,
  internal: InternalError,
  unavailable: UnavailableError,
  insufficient_storage: InsufficientStorageError,
};
const byStatus: Record<number, string> = {
  400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "not_found", 409: "conflict",
  412: "precondition_failed", 413: "payload_too_large", 416: "range_not_satisfiable", 500: "internal", 503: "unavailable",
  507: "insufficient_storage",
};

/** The error for an API code (or, without one, the HTTP status). */
export function errorFor(code: string, message: string, status = 0): NsboxError {
  const c = code || byStatus[status] || "";
  const cls = byCode[c] ?? NsboxError;
  return new cls(message, c, status);
}
