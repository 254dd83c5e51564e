"""A NUL character (U+0000) in API input is refused with 400 (404 in a path), never stored or bound
into a query: PostgreSQL text cannot hold one, and Schemathesis found it answering 500 there."""
import io

from tests.api.conftest import bearer, new_client
from tests.api.test_envelope import assert_error


def test_nul_in_a_json_body_is_400_naming_the_field(client, make_account, api_token):
    account, _ = make_account()
    headers = bearer(api_token(account))
    response = client.post("/api/v1/contacts", headers=headers,
                           json={"email": "ann@example.com", "custom_fields": {"plan": "pro\u0000"}})
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"] == [{"field": "custom_fields.plan", "issue": "Contains the NUL character (U+0000)."}]
    response = client.post("/api/v1/contacts/import", headers=headers,
                           json={"contacts": [{"email": "a@example.com"}, {"email": "b\u0000@example.com"}]})
    assert assert_error(response, 400, "VALIDATION_ERROR")["details"][0]["field"] == "contacts[1].email"
    response = client.delete("/api/v1/suppressions", headers=headers, json={"emails": ["x\u0000@example.com"]})
    assert assert_error(response, 400, "VALIDATION_ERROR")["details"][0]["field"] == "emails[0]"
    assert client.get("/api/v1/contacts", headers=headers).get_json()["meta"]["total"] == 0


def test_nul_in_a_key_is_400_too(client, make_account, api_token):
    account, _ = make_account()
    response = client.post("/api/v1/contacts", headers=bearer(api_token(account)),
                           json={"email": "ann@example.com", "custom_fields": {"pl\u0000an": "pro"}})
    assert assert_error(response, 400, "VALIDATION_ERROR")["details"][0]["field"] == "custom_fields.pl\\u0000an"


def test_nul_in_the_query_string_is_400(client, make_account, api_token):
    account, _ = make_account()
    headers = bearer(api_token(account))
    for path in ("/api/v1/contacts?q=ann%00", "/api/v1/account?anything=%00", "/api/v1/contacts/export?tag=%00"):
        error = assert_error(client.get(path, headers=headers), 400, "VALIDATION_ERROR")
        assert error["details"][0]["issue"] == "Contains the NUL character (U+0000)."
    # Authentication still comes first.
    assert_error(client.get("/api/v1/contacts?q=%00"), 401, "UNAUTHORIZED")


def test_nul_in_a_multipart_field_is_400(client, make_account, api_token):
    account, _ = make_account()
    response = client.post("/api/v1/contacts/import", headers=bearer(api_token(account)),
                           data={"file": (io.BytesIO(b"email\nann@example.com\n"), "c.csv"), "tags": "vip\u0000"},
                           content_type="multipart/form-data")
    assert assert_error(response, 400, "VALIDATION_ERROR")["details"][0]["field"] == "tags"


def test_nul_in_a_path_is_404(client, make_account, api_token):
    account, _ = make_account()
    headers = bearer(api_token(account))
    assert_error(client.delete("/api/v1/suppressions/x%00@example.com", headers=headers), 404, "NOT_FOUND")
    assert_error(client.delete("/api/v1/custom-fields/pl%00an", headers=headers), 404, "NOT_FOUND")


def test_nul_in_token_request_is_invalid_request(app, make_account, make_api_client):
    account, _ = make_account()
    api_client, secret = make_api_client(account)
    test_client = new_client(app)
    for kwargs in ({"data": {"grant_type": "client_credentials", "client_id": api_client.client_id + "\u0000",
                             "client_secret": secret}},
                   {"json": {"grant_type": "client_credentials", "client_id": api_client.client_id,
                             "client_secret": secret + "\u0000"}}):
        response = test_client.post("/api/v1/oauth/token", **kwargs)
        assert response.status_code == 400
        assert response.get_json()["error"] == "invalid_request"


def test_a_binary_file_is_not_taken_for_a_csv(client, make_account, api_token):
    account, _ = make_account()
    zipped = b"PK\x03\x04\x14\x00\x00\x00\x00\x00P\x97;]C\xbe\xb7\xe8\x01\x00\x00\x00a.txtaPK\x05\x06\x00\x00"
    response = client.post("/api/v1/contacts/import", headers=bearer(api_token(account)),
                           data={"file": (io.BytesIO(zipped), "contacts.zip")}, content_type="multipart/form-data")
    error = assert_error(response, 400, "VALIDATION_ERROR")
    assert error["details"] == [{"field": "file", "issue": "This is not a CSV file: it holds binary data. "
                                                           "Export the sheet as CSV first."}]
    assert client.get("/api/v1/imports", headers=bearer(api_token(account))).get_json()["meta"]["total"] == 0
