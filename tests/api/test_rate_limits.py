"""Per-account rate limits by plan: a burst of 2n per 2-minute window (docs/api.md), 429 with headers."""
from tests.api.conftest import bearer, new_client, request_token

LIMITS = {"starter": 3, "professional": 5, "enterprise": 50}


def test_429_under_a_small_limit_shared_by_the_accounts_clients(make_app, make_account, make_api_client):
    app = make_app(PLAN_RATE_LIMITS=LIMITS)
    test_client = new_client(app)
    account, _ = make_account(plan="starter")
    first, first_secret = make_api_client(account, "contacts:read")
    second, second_secret = make_api_client(account, "analytics:read")
    token_1 = request_token(test_client, first.client_id, first_secret)
    token_2 = request_token(test_client, second.client_id, second_secret)

    # starter: 3 per minute, burst 6 -> six requests in the window, from either client.
    statuses = []
    for i in range(6):
        response = test_client.get("/api/v1/account", headers=bearer(token_1 if i % 2 else token_2))
        statuses.append(response.status_code)
    assert statuses == [200] * 6
    assert response.headers["RateLimit-Limit"] == "6"
    assert response.headers["RateLimit-Remaining"] == "0"
    assert response.headers["RateLimit-Policy"] == "6;w=120"

    blocked = test_client.get("/api/v1/account", headers=bearer(token_2))
    assert blocked.status_code == 429
    error = blocked.get_json()["error"]
    assert error["code"] == "RATE_LIMITED"
    assert "3 requests per minute" in error["message"]
    assert 0 < int(blocked.headers["Retry-After"]) <= 120
    assert blocked.headers["RateLimit-Limit"] == "6"
    assert blocked.headers["RateLimit-Remaining"] == "0"
    assert 0 < int(blocked.headers["RateLimit-Reset"]) <= 121
    # The other client of the same account shares the counter.
    assert test_client.get("/api/v1/account", headers=bearer(token_1)).status_code == 429


def test_other_accounts_are_not_affected(make_app, make_account, make_api_client):
    app = make_app(PLAN_RATE_LIMITS=LIMITS)
    test_client = new_client(app)
    busy, _ = make_account(plan="starter")
    calm, _ = make_account(plan="starter")
    busy_client, busy_secret = make_api_client(busy)
    calm_client, calm_secret = make_api_client(calm)
    busy_token = request_token(test_client, busy_client.client_id, busy_secret)
    calm_token = request_token(test_client, calm_client.client_id, calm_secret)
    while test_client.get("/api/v1/account", headers=bearer(busy_token)).status_code != 429:
        pass
    response = test_client.get("/api/v1/account", headers=bearer(calm_token))
    assert response.status_code == 200
    assert response.headers["RateLimit-Remaining"] == "5"


def test_limit_follows_the_plan(make_app, make_account, make_api_client):
    app = make_app(PLAN_RATE_LIMITS=LIMITS)
    test_client = new_client(app)
    account, _ = make_account(plan="professional")
    api_client, secret = make_api_client(account)
    token = request_token(test_client, api_client.client_id, secret)
    response = test_client.get("/api/v1/account", headers=bearer(token))
    assert response.headers["RateLimit-Limit"] == "10"
    assert response.headers["X-RateLimit-Limit"] == "10"


def test_default_plan_limits(client, make_account, api_token):
    account, _ = make_account(plan="starter")
    response = client.get("/api/v1/account", headers=bearer(api_token(account)))
    assert response.headers["RateLimit-Limit"] == "200"
    assert response.headers["RateLimit-Policy"] == "200;w=120"


def test_retry_after_only_on_429(client, make_account, api_token):
    account, _ = make_account()
    response = client.get("/api/v1/account", headers=bearer(api_token(account)))
    assert response.status_code == 200
    assert "Retry-After" not in response.headers
    assert response.headers["X-RateLimit-Remaining"] == "199"
