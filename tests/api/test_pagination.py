"""The one pagination helper: page/per_page in, meta and links out, exactly like the spec's example."""
import pytest
import sqlalchemy as sa
from flask import Blueprint, g
from werkzeug.datastructures import MultiDict

from nudge.blueprints.api.auth import api_route
from nudge.blueprints.api.pagination import page_meta_links, paginated_response
from nudge.extensions import db
from nudge.models import AuditLog
from nudge.services import audit
from tests.api.conftest import bearer, new_client, request_token


def test_links_like_the_spec():
    meta, links = page_meta_links(150, 1, 50, path="/api/v1/contacts", args=MultiDict({"page": "1"}))
    assert meta == {"total": 150, "page": 1, "per_page": 50}
    assert links == {"self": "/api/v1/contacts?page=1", "next": "/api/v1/contacts?page=2",
                     "first": "/api/v1/contacts?page=1", "last": "/api/v1/contacts?page=3"}


def test_middle_and_last_pages():
    args = MultiDict([("status", "active"), ("page", "2"), ("tag", "a"), ("tag", "b"), ("per_page", "50")])
    _, links = page_meta_links(150, 2, 50, path="/api/v1/contacts", args=args)
    assert links["self"] == "/api/v1/contacts?status=active&page=2&tag=a&tag=b&per_page=50"
    assert links["next"] == "/api/v1/contacts?status=active&page=3&tag=a&tag=b&per_page=50"
    assert links["prev"] == "/api/v1/contacts?status=active&page=1&tag=a&tag=b&per_page=50"
    _, links = page_meta_links(150, 3, 50, path="/api/v1/contacts", args=MultiDict({"page": "3"}))
    assert "next" not in links and links["prev"] == "/api/v1/contacts?page=2"


def test_empty_list_has_one_page():
    meta, links = page_meta_links(0, 1, 50, path="/api/v1/contacts", args=MultiDict())
    assert meta == {"total": 0, "page": 1, "per_page": 50}
    assert links == {"self": "/api/v1/contacts?page=1", "first": "/api/v1/contacts?page=1",
                     "last": "/api/v1/contacts?page=1"}


@pytest.fixture
def items_app(make_app):
    """An app with a tiny test-only list endpoint built on the helper (audit entries of the token's account)."""
    app = make_app()
    bp = Blueprint("api_test_items", __name__)

    @bp.get("/items")
    @api_route(None, summary="Test items", paginated=True, response={"type": "object"})
    def items():
        query = (sa.select(AuditLog).where(AuditLog.account_id == g.api_actor.account_id,
                                           AuditLog.action == "test.item")
                 .order_by(AuditLog.meta["n"].as_integer(), AuditLog.id))
        return paginated_response(query, lambda entry: {"n": entry.meta["n"]})

    app.register_blueprint(bp, url_prefix="/api/v1/test")
    return app


@pytest.fixture
def items_token(items_app, make_account, make_api_client):
    def factory(count):
        account, _ = make_account()
        for n in range(count):
            audit.record("test.item", account_id=account.id, meta={"n": n})
        db.session.commit()
        api_client, secret = make_api_client(account, "analytics:read")
        return account, request_token(new_client(items_app), api_client.client_id, secret)
    return factory


def test_list_endpoint_pages(items_app, items_token):
    _, token = items_token(7)
    test_client = new_client(items_app)
    body = test_client.get("/api/v1/test/items?per_page=3", headers=bearer(token)).get_json()
    assert [item["n"] for item in body["data"]] == [0, 1, 2]
    assert body["meta"] == {"total": 7, "page": 1, "per_page": 3}
    assert body["links"] == {"self": "/api/v1/test/items?page=1&per_page=3",
                             "next": "/api/v1/test/items?page=2&per_page=3",
                             "first": "/api/v1/test/items?page=1&per_page=3",
                             "last": "/api/v1/test/items?page=3&per_page=3"}
    body = test_client.get(body["links"]["last"], headers=bearer(token)).get_json()
    assert [item["n"] for item in body["data"]] == [6]
    assert body["links"]["prev"] == "/api/v1/test/items?page=2&per_page=3"
    assert "next" not in body["links"]


def test_default_page_size_is_50(items_app, items_token):
    _, token = items_token(60)
    body = new_client(items_app).get("/api/v1/test/items", headers=bearer(token)).get_json()
    assert len(body["data"]) == 50
    assert body["meta"] == {"total": 60, "page": 1, "per_page": 50}
    assert body["links"]["next"] == "/api/v1/test/items?page=2"


def test_page_past_the_end_is_empty(items_app, items_token):
    _, token = items_token(2)
    body = new_client(items_app).get("/api/v1/test/items?page=5", headers=bearer(token)).get_json()
    assert body["data"] == []
    assert body["links"]["prev"] == "/api/v1/test/items?page=1"


@pytest.mark.parametrize("query, field", [
    ("per_page=101", "per_page"), ("per_page=0", "per_page"), ("per_page=ten", "per_page"),
    ("page=0", "page"), ("page=-1", "page"), ("page=1.5", "page"),
    ("page=7110324517699111936", "page"),  # its row offset would not fit the database's integers
])
def test_invalid_parameters_are_400(items_app, items_token, query, field):
    _, token = items_token(1)
    response = new_client(items_app).get(f"/api/v1/test/items?{query}", headers=bearer(token))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert [d["field"] for d in error["details"]] == [field]


def test_list_documented_with_pagination_parameters(items_app):
    doc = new_client(items_app).get("/api/v1/openapi.json").get_json()
    operation = doc["paths"]["/api/v1/test/items"]["get"]
    assert {"$ref": "#/components/parameters/per_page"} in operation["parameters"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["properties"]["meta"] == {"$ref": "#/components/schemas/PageMeta"}
