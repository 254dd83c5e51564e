"""The API does what its OpenAPI document says (issue 14, section 6).

Schemathesis generates requests for every operation of /api/v1/openapi.json (valid and invalid ones:
examples, coverage edge cases and fuzzing) and checks every answer: no server error, only documented
status codes and content types, bodies and headers that match their schemas. It drives the app in
process (WSGI), derandomized with a fixed seed, with a token holding every scope (one case in ten
without one) and limits raised so 429s do not drown the run. Half of the cases that name a resource
by path get one that exists (made through the API just before), so success bodies are checked as
well as 404s.
"""
import base64
import itertools
import time

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from nudge import create_app
from nudge.extensions import db
from nudge.services import accounts as accounts_service, api_clients, sending_domains
from nudge.services.custom_fields import MAX_FIELDS
from nudge.services.permissions import SCOPES
from tests.api.conftest import fresh_ip
from tests.conftest import PASSWORD, _empty_tables, config_for_tests

UNLIMITED = 10**9
MAX_EXAMPLES = 75
CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance")
TOKEN_PATH = "/api/v1/oauth/token"

# The schema is loaded at import from an app of this module's own (the limits raised): Schemathesis's
# lazy loader (schemathesis.pytest.from_fixture) fails under pytest 9.2 (it sets Function._nodeid).
# The module fixture below gives that app its account and token and empties the tables afterwards.
APP = create_app(config_for_tests(
    PLAN_RATE_LIMITS={"starter": UNLIMITED, "professional": UNLIMITED, "enterprise": UNLIMITED},
    API_TOKEN_RATE_LIMIT=f"{UNLIMITED} per minute", TEST_SENDS_PER_HOUR=UNLIMITED,
    # Sending-domain checks ask a closed local port (no answer is a reported error, never the internet).
    DNS_TIMEOUT=0.2))
CONFIG = schemathesis.Config.from_dict({
    "seed": 14,
    "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
})
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", APP, config=CONFIG)


class Api:
    """The account under test, its API client and token, and fresh resources made through the API."""

    def __init__(self):
        self.ip = fresh_ip()
        account, owner = accounts_service.create_account(name="Conformance", email="owner@conformance.example",
                                                         password=PASSWORD)
        account.monthly_email_limit = UNLIMITED
        db.session.commit()
        client, self.secret = api_clients.create_api_client(owner, name="Schemathesis", scopes=" ".join(SCOPES))
        self.client_id = client.client_id
        self.http = APP.test_client()
        self.http.environ_base["REMOTE_ADDR"] = self.ip
        token = self.http.post(TOKEN_PATH, data={"grant_type": "client_credentials", "client_id": self.client_id,
                                                 "client_secret": self.secret}).get_json()["access_token"]
        self.bearer = {"Authorization": f"Bearer {token}"}
        self.counter = itertools.count(1)
        self.cases = 0
        self.post("/contacts", {"email": "reader@conformance.example"})  # campaigns have someone to send to

    def basic(self):
        return {"Authorization": "Basic " + base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()}

    def post(self, path, body, method="POST"):
        response = self.http.open("/api/v1" + path, method=method, json=body, headers=self.bearer)
        assert response.status_code in (200, 201), (path, response.get_data(as_text=True))
        return response.get_json()["data"]

    def put(self, path, body):
        return self.post(path, body, method="PUT")

    # A new resource for each path parameter, in one of a few shapes (n varies them). A parameter without
    # a method here keeps its generated value (a 404, still checked against the document).

    def fresh_contact_id(self, n):
        return self.post("/contacts", {"email": f"p{n}@conformance.example", "first_name": "Ann",
                                       "tags": ["vip"]})["id"]

    def fresh_campaign_id(self, n):
        campaign = self.post("/campaigns", {"name": f"Campaign {n}", "subject": "Hello {{ contact.first_name }}",
                                            "from_email": "news@conformance.example",
                                            "content_html": '<p>Hi</p><p>{{ account.postal_address }}</p>'
                                                            '<a href="{{ unsubscribe_url }}">Unsubscribe</a>',
                                            "audience": {"all": True}})
        if n % 3 == 1:  # a scheduled one, so unschedule, cancel and send-now have something to act on
            # (the checklist wants the account's postal address, which the fuzzed PUT /account may have emptied)
            self.put("/account", {"postal_address": "1 Main St, Springfield"})
            self.post(f"/campaigns/{campaign['id']}/send", {"scheduled_at": "2099-01-01T09:00:00Z"})
        return campaign["id"]

    def fresh_segment_id(self, n):
        rules = {"match": "all", "conditions": [{"field": "email", "op": "ends_with", "value": "@conformance.example"}]}
        body = {"name": f"Segment {n}", "type": "static"} if n % 2 else {"name": f"Segment {n}", "conditions": rules}
        return self.post("/segments", body)["id"]

    def fresh_template_id(self, n):
        shapes = [{}, {"format": "mjml", "content_source": "<mjml><mj-body><mj-section><mj-column><mj-text>Hi"
                                                           "</mj-text></mj-column></mj-section></mj-body></mjml>"},
                  {"format": "html", "content_source": "<p>Hi {{ contact.first_name }}</p>"}]
        return self.post("/templates", {"name": f"Template {n}", **shapes[n % 3]})["id"]

    def fresh_version(self, n):
        return 1  # with a fresh template_id: its first version

    def fresh_import_id(self, n):
        rows = [{"email": f"p{n}@conformance.example"}, {"email": "not an address"}]
        return self.post("/contacts/import", {"contacts": rows})["import_id"]

    def fresh_name(self, n):
        # An account holds at most MAX_FIELDS custom fields (the fuzzed POST may have made them): one makes way.
        fields = self.http.get("/api/v1/custom-fields?per_page=100", headers=self.bearer).get_json()
        if fields["meta"]["total"] >= MAX_FIELDS:
            self.http.delete(f"/api/v1/custom-fields/{fields['data'][0]['name']}", headers=self.bearer)
        body = {"name": f"field_{n}", "type": "choice", "options": ["a", "b"]} if n % 2 else {"name": f"field_{n}"}
        return self.post("/custom-fields", body)["name"]

    def fresh_domain_id(self, n):
        # An account holds at most MAX_DOMAINS sending domains (the fuzzed POST may have made them): one makes way.
        domains = self.http.get("/api/v1/sending-domains", headers=self.bearer).get_json()
        if domains["meta"]["total"] >= sending_domains.MAX_DOMAINS:
            self.http.delete(f"/api/v1/sending-domains/{domains['data'][0]['id']}", headers=self.bearer)
        return self.post("/sending-domains", {"domain": f"d{n}.conformance.example"})["id"]

    def fresh_email(self, n):
        email = f"p{n}@conformance.example"
        self.post("/suppressions", {"emails": [email]})
        return email

    def prepare(self, case):
        """The headers for a case. Every other case that names a resource by path gets one that exists;
        token requests alternate between the real client's credentials and generated ones; one case in
        ten goes without a token (its 401 is checked like any answer)."""
        self.cases += 1
        if case.path == TOKEN_PATH:
            return self.basic() if self.cases % 2 else {}
        if case.path_parameters and self.cases % 2:
            for name in list(case.path_parameters):
                fresh = getattr(self, f"fresh_{name}", None)
                if fresh is not None:
                    case.path_parameters[name] = fresh(next(self.counter))
        return {} if self.cases % 10 == 5 else self.bearer


@pytest.fixture(scope="module")
def api(_schema):
    ctx = APP.app_context()
    ctx.push()
    started, cpu = time.monotonic(), time.process_time()
    state = Api()
    yield state
    print(f"\nSchemathesis: {state.cases} cases in {time.monotonic() - started:.1f} s "
          f"({time.process_time() - cpu:.1f} s of CPU)")
    db.session.remove()
    _empty_tables()
    ctx.pop()


@schema.parametrize()
@settings(suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, api):
    headers = api.prepare(case)
    case.call_and_validate(headers=headers, environ_overrides={"REMOTE_ADDR": api.ip})
