"""The spec's envelope and error format, and JSON for unknown paths, wrong methods and bad bodies."""
import pytest

from tests.api.conftest import bearer


def assert_error(response, status, code):
    assert response.status_code == status
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["details"], list)
    return body["error"]


def test_success_envelope(client, make_account, api_token):
    account, _ = make_account()
    body = client.get("/api/v1/account", headers=bearer(api_token(account))).get_json()
    assert set(body) == {"data", "meta", "links"}
    assert body["links"]["self"] == "/api/v1/account"


def test_unknown_path_is_json_404(client):
    error = assert_error(client.get("/api/v1/nope"), 404, "NOT_FOUND")
    assert error["message"]


def test_wrong_method_is_json_405_with_allow(client):
    response = client.delete("/api/v1/account")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert {m.strip() for m in response.headers["Allow"].split(",")} >= {"GET", "PUT"}
    response = client.get("/api/v1/oauth/token")
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("payload, content_type, issue", [
    ('{"name": "x",}', "application/json", "Malformed JSON"),
    ('{"name": ', "application/json", "Malformed JSON"),
    ('["name"]', "application/json", "Expected a JSON object, got an array"),
    ('"name"', "application/json", "Expected a JSON object, got a string"),
    ("", "application/json", "Empty body"),
    ("name=x", "application/x-www-form-urlencoded", "Content-Type must be application/json"),
    ('{"name": NaN}', "application/json", "Malformed JSON"),
])
def test_bad_json_bodies_are_400_with_details(client, make_account, api_token, payload, content_type, issue):
    account, _ = make_account()
    response = client.put("/api/v1/account", data=payload, content_type=content_type,
                          headers=bearer(api_token(account)))
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"][0]["field"] == "body"
    assert issue in error["details"][0]["issue"]


def test_malformed_json_says_where(client, make_account, api_token):
    account, _ = make_account()
    response = client.put("/api/v1/account", data='{\n  "name": "x",\n  oops\n}', content_type="application/json",
                          headers=bearer(api_token(account)))
    issue = response.get_json()["error"]["details"][0]["issue"]
    assert "line 3" in issue


def test_errors_from_the_unauthenticated_side_use_the_envelope_too(client):
    assert_error(client.put("/api/v1/account", data="{", content_type="application/json"), 401, "UNAUTHORIZED")
