"""Domain errors raised by services and mapped to HTML or the API's error envelope in one place each."""


class DomainError(Exception):
    code = "ERROR"
    status = 400

    def __init__(self, message, details=None):
        super().__init__(message)
        self.message = message
        self.details = details or []


class ValidationError(DomainError):
    """details: [{"field": ..., "issue": ...}] as in the spec's error format."""
    code = "VALIDATION_ERROR"
    status = 400


class NotFound(DomainError):
    code = "NOT_FOUND"
    status = 404


class Forbidden(DomainError):
    code = "FORBIDDEN"
    status = 403


class EmailNotConfirmed(Forbidden):
    """An account made by open sign-up whose owner has not confirmed the email address: nothing may be sent."""
    code = "EMAIL_NOT_CONFIRMED"


class SignupClosed(Forbidden):
    """NUDGE_SIGNUP does not let this visitor create an account."""
    code = "SIGNUP_CLOSED"


class Conflict(DomainError):
    code = "CONFLICT"
    status = 409


class LimitExceeded(DomainError):
    code = "LIMIT_EXCEEDED"
    status = 403


class RateLimited(DomainError):
    """Too many of something in a window; retry_after: seconds until one is freed (the Retry-After header)."""
    code = "RATE_LIMITED"
    status = 429

    def __init__(self, message, details=None, retry_after=60):
        super().__init__(message, details)
        self.retry_after = max(1, int(retry_after))


class AuthenticationFailed(DomainError):
    code = "UNAUTHORIZED"
    status = 401


def field_error(field, issue, message=None):
    """A ValidationError about one field."""
    return ValidationError(message or issue, [{"field": field, "issue": issue}])
