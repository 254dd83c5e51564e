"""Cheap requests that used to cost a lot: JSON nested past the stack, and bodies over the API's limit."""
import io

from nudge.config import API_MAX_BODY_BYTES
from nudge.services.validation import MAX_JSON_DEPTH
from tests.api.conftest import bearer
from tests.api.test_envelope import assert_error


def nested(depth, inner="1"):
    return "[" * depth + inner + "]" * depth


def test_json_nested_past_the_stack_is_a_400_not_a_500(client, make_account, api_token):
    account, _ = make_account()
    headers = bearer(api_token(account))
    for body in (nested(100_000), '{"name": ' + nested(100_000) + "}", '{"a": ' * 50_000 + "1" + "}" * 50_000):
        response = client.put("/api/v1/account", data=body, content_type="application/json", headers=headers)
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert error["details"] == [{"field": "body",
                                     "issue": f"JSON may be nested at most {MAX_JSON_DEPTH} levels deep."}]
    response = client.post("/api/v1/contacts", headers=headers, content_type="application/json",
                           data='{"email": "a@example.com", "custom_fields": {"x": ' + nested(MAX_JSON_DEPTH) + "}}")
    assert_error(response, 400, "VALIDATION_ERROR")
    assert "levels deep" in response.get_json()["error"]["details"][0]["issue"]
    # Just within the cap, the body is read and the fields are judged as usual.
    response = client.put("/api/v1/account", data='{"name": ' + nested(MAX_JSON_DEPTH - 1) + "}",
                          content_type="application/json", headers=headers)
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert "levels deep" not in str(error["details"])


def test_json_bodies_over_the_api_limit_are_413_in_the_envelope(client, make_account, api_token):
    account, _ = make_account()
    body = '{"name": "' + "x" * API_MAX_BODY_BYTES + '"}'
    response = client.put("/api/v1/account", data=body, content_type="application/json",
                          headers=bearer(api_token(account)))
    error = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert error["message"]


def test_csv_uploads_keep_the_upload_limit(client, make_account, api_token):
    account, _ = make_account()
    big = io.BytesIO(b"x" * (API_MAX_BODY_BYTES + 1024))
    response = client.post("/api/v1/contacts/import", headers=bearer(api_token(account)),
                           data={"other": (big, "big.bin")}, content_type="multipart/form-data")
    error = assert_error(response, 400, "VALIDATION_ERROR")  # read in full, then judged: no `file` part
    assert error["details"][0]["field"] == "file"
