"""/api/v1/templates: CRUD, versions, restore, render — in the spec's envelope, scoped to the token's account."""
from tests.api.conftest import bearer

MJML = ("<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ contact.first_name | default(\"there\") }}</mj-text>"
        "<mj-text>{{ account.postal_address }} <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></mj-text>"
        "</mj-column></mj-section></mj-body></mjml>")


def create(client, token, **body):
    body.setdefault("name", "Welcome")
    return client.post("/api/v1/templates", json=body, headers=bearer(token))


def test_create_show_update_and_delete_a_template(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "campaigns:read campaigns:write")
    created = create(client, token, format="mjml", content_source=MJML, category="Welcome")
    assert created.status_code == 201, created.get_json()
    data = created.get_json()["data"]
    assert (data["format"], data["current_version"], data["is_global"]) == ("mjml", 1, False)
    assert "Hi {{ contact.first_name" in data["content"]["content_html"]
    assert data["content"]["content_source"] == MJML

    shown = client.get(f"/api/v1/templates/{data['id']}", headers=bearer(token)).get_json()["data"]
    assert shown["content"]["version"] == 1

    changed = client.put(f"/api/v1/templates/{data['id']}", headers=bearer(token),
                         json={"name": "Welcome v2", "content_source": MJML.replace("Hi", "Hello"), "base_version": 1})
    body = changed.get_json()
    assert changed.status_code == 200, body
    assert body["data"]["name"] == "Welcome v2" and body["data"]["current_version"] == 2
    assert body["meta"]["conflict"] is False and body["meta"]["unchanged"] is False

    assert client.delete(f"/api/v1/templates/{data['id']}", headers=bearer(token)).status_code == 204
    assert client.get(f"/api/v1/templates/{data['id']}", headers=bearer(token)).status_code == 404


def test_versions_are_listed_and_restored_as_a_new_version(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "campaigns:read campaigns:write")
    template_id = create(client, token, format="mjml", content_source=MJML).get_json()["data"]["id"]
    client.put(f"/api/v1/templates/{template_id}", headers=bearer(token),
               json={"content_source": MJML.replace("Hi", "Hey")})
    versions = client.get(f"/api/v1/templates/{template_id}/versions", headers=bearer(token)).get_json()
    assert [v["version"] for v in versions["data"]] == [2, 1] and versions["meta"]["total"] == 2
    restored = client.post(f"/api/v1/templates/{template_id}/versions/1/restore", headers=bearer(token))
    assert restored.status_code == 201 and restored.get_json()["data"]["version"] == 3
    assert restored.get_json()["data"]["content_source"] == MJML
    one = client.get(f"/api/v1/templates/{template_id}/versions/2", headers=bearer(token)).get_json()["data"]
    assert "Hey" in one["content_source"]
    missing = client.get(f"/api/v1/templates/{template_id}/versions/9", headers=bearer(token))
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == "NOT_FOUND"


def test_a_stale_update_is_saved_and_reported_as_a_conflict(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "campaigns:read campaigns:write")
    template_id = create(client, token, format="mjml", content_source=MJML).get_json()["data"]["id"]
    client.put(f"/api/v1/templates/{template_id}", headers=bearer(token),
               json={"content_source": MJML.replace("Hi", "A"), "base_version": 1})
    stale = client.put(f"/api/v1/templates/{template_id}", headers=bearer(token),
                       json={"content_source": MJML.replace("Hi", "B"), "base_version": 1}).get_json()
    assert stale["meta"]["conflict"] is True and stale["data"]["current_version"] == 3


def test_render_personalises_and_warns(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "campaigns:read")
    response = client.post("/api/v1/templates/render", headers=bearer(token),
                           json={"mjml": MJML, "contact": {"first_name": "Ann", "email": "ann@example.com"}})
    assert response.status_code == 200, response.get_json()
    data = response.get_json()["data"]
    assert "Hi Ann" in data["html"] and "Hi Ann" in data["text"]
    assert all(w["code"] != "unsubscribe_missing" for w in data["warnings"])

    bare = client.post("/api/v1/templates/render", headers=bearer(token),
                       json={"html": "<p>Hello {{ contact.first_name }}<img src='https://x.example/a.png'></p>"})
    codes = {w["code"] for w in bare.get_json()["data"]["warnings"]}
    assert {"unsubscribe_missing", "postal_address_missing", "image_alt"} <= codes
    assert "Hello Alex" in bare.get_json()["data"]["html"]


def test_render_rejects_sandbox_escapes_and_bad_input(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "campaigns:read")
    escape = client.post("/api/v1/templates/render", headers=bearer(token),
                         json={"html": "<p>{{ ''.__class__.__mro__[1].__subclasses__() }}</p>"})
    assert escape.status_code == 400 and "blocked" in escape.get_json()["error"]["message"]
    assert "<class" not in escape.get_data(as_text=True)
    two = client.post("/api/v1/templates/render", headers=bearer(token), json={"html": "<p>x</p>", "mjml": MJML})
    assert two.status_code == 400 and two.get_json()["error"]["code"] == "VALIDATION_ERROR"


def test_gallery_templates_are_listed_read_only_and_copyable(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "campaigns:read campaigns:write")
    gallery = client.get("/api/v1/templates?is_global=true", headers=bearer(token)).get_json()["data"]
    assert len(gallery) >= 6 and all(t["is_global"] for t in gallery)
    assert all(t["thumbnail_url"].startswith("http") for t in gallery)
    newsletter = next(t for t in gallery if t["category"] == "Newsletter")
    refused = client.put(f"/api/v1/templates/{newsletter['id']}", headers=bearer(token), json={"name": "Mine"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "FORBIDDEN"
    copy = create(client, token, name="My newsletter", copy_of=newsletter["id"])
    assert copy.status_code == 201 and copy.get_json()["data"]["is_global"] is False
    mine = client.get("/api/v1/templates?is_global=false", headers=bearer(token)).get_json()["data"]
    assert [t["name"] for t in mine] == ["My newsletter"]


def test_templates_are_scoped_to_the_token_account_and_its_scopes(client, make_account, api_token):
    account, _ = make_account()
    other, _ = make_account()
    token = api_token(account, "campaigns:read campaigns:write")
    template_id = create(client, token).get_json()["data"]["id"]
    other_token = api_token(other, "campaigns:read campaigns:write")
    assert client.get(f"/api/v1/templates/{template_id}", headers=bearer(other_token)).status_code == 404
    assert client.delete(f"/api/v1/templates/{template_id}", headers=bearer(other_token)).status_code == 404
    reader = api_token(account, "campaigns:read")
    assert create(client, reader).status_code == 403
    contacts_only = api_token(account, "contacts:read")
    assert client.get("/api/v1/templates", headers=bearer(contacts_only)).status_code == 403


def test_invalid_content_is_a_validation_error_with_the_field(client, make_account, api_token):
    account, _ = make_account()
    token = api_token(account, "campaigns:read campaigns:write")
    response = create(client, token, content_json={"schema": 1, "blocks": [{"id": "abc123", "type": "rocket"}]})
    assert response.status_code == 400
    assert any(d["field"].startswith("blocks[0]") for d in response.get_json()["error"]["details"])
    unknown = create(client, token, colour="red")
    assert unknown.status_code == 400 and unknown.get_json()["error"]["details"][0]["field"] == "colour"


def test_render_refuses_runaway_templates_and_stays_healthy(client, make_account, api_token):
    from nudge.services import rendering
    account, _ = make_account()
    token = api_token(account, "campaigns:read campaigns:write")
    big = '{% set s = "x" * 10000 %}{% set s = ' + "s~" * 95 + "s %}"
    runaway = big + '{% for a in "x" * 3000 %}{% if (s | replace("x", "y")) | length > 5 %}{% endif %}{% endfor %}'
    for html, message in ((runaway, "takes too long to render"),
                          ('{% for a in "x" * 200 %}{% for b in "x" * 200 %}{% endfor %}{% endfor %}',
                           "Loops may run at most 10,000 times in one email"),
                          ("<p>" + "{{" * 8000 + "</p>", "The template has an error")):
        response = client.post("/api/v1/templates/render", headers=bearer(token), json={"html": html})
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["code"] == "VALIDATION_ERROR" and message in error["message"]
        assert error["details"][0]["field"] == "content"
    healthy = client.post("/api/v1/templates/render", headers=bearer(token), json={"mjml": MJML})
    assert healthy.status_code == 200 and "Hi Alex" in healthy.get_json()["data"]["html"]
    too_big = create(client, token, format="html", content_source="<p>" + "x" * rendering.MAX_SOURCE_BYTES + "</p>")
    assert too_big.status_code == 400
    error = too_big.get_json()["error"]
    assert error["details"][0]["field"] == "content_source" and "at most 512 KB" in error["message"]
