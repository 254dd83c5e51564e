"""The API's error envelope: {"error": {"code", "message", "details"}} (spec section 1)."""
from flask import jsonify

HTTP_CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "RATE_LIMITED",
    500: "SERVER_ERROR",
}


def error_response(status, message, details=None, code=None, headers=None):
    body = {"error": {"code": code or HTTP_CODES.get(status, "ERROR"), "message": message,
                      "details": details or []}}
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
