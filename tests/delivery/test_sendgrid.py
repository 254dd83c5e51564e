"""SendGrid provider against a local server speaking the v3 mail/send API."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from nudge.delivery.sendgrid import SendGridProvider

API_KEY = "SG.test-key"


class FakeSendGrid(BaseHTTPRequestHandler):
    """POST /v3/mail/send: checks the bearer and the body's shape, records it, answers like SendGrid.

    Recipients choose the answer: bad-* -> 400 invalid email, slow-* -> 429, boom-* -> 500.
    """
    protocol_version = "HTTP/1.1"       # keep-alive, as api.sendgrid.com
    server_version = "FakeSendGrid"

    def do_POST(self):
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with state["lock"]:
            state["peers"].add(self.client_address)
            state["requests"] += 1
        if self.path != "/v3/mail/send":
            return self._reply(404, {"errors": [{"message": "not found"}]})
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self._reply(401, {"errors": [{"field": None,
                                                 "message": "The provided authorization grant is invalid"}]})
        document = json.loads(body)
        to = document["personalizations"][0]["to"][0]["email"]
        if "@" not in document["from"]["email"] or not document.get("content"):
            return self._reply(400, {"errors": [{"field": "from", "message": "malformed"}]})
        if to.startswith("bad-"):
            return self._reply(400, {"errors": [{"field": "personalizations.0.to.0.email",
                                                 "message": "Does not contain a valid address."}]})
        if to.startswith("slow-"):
            return self._reply(429, {"errors": [{"message": "too many requests"}]}, {"Retry-After": "7"})
        if to.startswith("boom-"):
            return self._reply(500, {"errors": [{"message": "internal error"}]})
        with state["lock"]:
            state["sent"].append(document)
            number = len(state["sent"])
        self._reply(202, None, {"X-Message-Id": f"sg-{number}"})

    def _reply(self, status, document, headers=None):
        body = json.dumps(document).encode() if document is not None else b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def sendgrid():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeSendGrid)
    server.state = {"sent": [], "peers": set(), "requests": 0, "lock": threading.Lock()}
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()


def test_sends_json_with_our_headers_over_one_kept_alive_connection(sendgrid, make_message):
    provider = SendGridProvider(API_KEY, api_url=sendgrid.url)
    messages = [make_message(address) for address in ("ann@example.org", "bob@example.org", "cy@example.org")]
    results = [provider.send(message, None) for message in messages]
    provider.close()

    assert [r.status for r in results] == ["sent"] * 3
    assert [r.provider_message_id for r in results] == ["sg-1", "sg-2", "sg-3"]
    assert len(sendgrid.state["peers"]) == 1
    document = sendgrid.state["sent"][0]
    message = messages[0]
    assert document["personalizations"] == [{"to": [{"email": "ann@example.org", "name": "Ann Oñate"}]}]
    assert document["from"] == {"email": "news@shop.example", "name": "Shöp « News »"}
    assert document["reply_to"] == {"email": "help@shop.example"}
    assert document["subject"] == message.subject
    assert document["content"] == [{"type": "text/plain", "value": message.text},
                                   {"type": "text/html", "value": message.html}]
    assert document["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert document["headers"]["List-Unsubscribe"] == "<https://shop.example/t/u/tok123>"
    assert document["headers"]["Message-ID"] == message.message_id
    assert document["custom_args"] == {"nudge_message_id": "m-ann"}


@pytest.mark.parametrize("recipient, status, fragment", [
    ("bad-address@example.org", "permanent", "Does not contain a valid address"),
    ("slow-down@example.org", "transient", "429"),
    ("boom-now@example.org", "transient", "500"),
])
def test_errors_are_classified(sendgrid, make_message, recipient, status, fragment):
    provider = SendGridProvider(API_KEY, api_url=sendgrid.url)
    result = provider.send(make_message(recipient), None)
    assert result.status == status and fragment in result.error
    if recipient.startswith("slow-"):
        assert result.retry_after == 7
    assert sendgrid.state["sent"] == []


def test_a_bad_key_is_transient_and_backs_off(sendgrid, make_message):
    provider = SendGridProvider("SG.wrong", api_url=sendgrid.url)
    first = provider.send(make_message(), None)
    second = provider.send(make_message(), None)
    assert first.status == "transient" and "401" in first.error and "SG.wrong" not in first.error
    assert second.status == "transient" and "next attempt in" in second.error
    assert sendgrid.state["requests"] == 1      # the second never reached the server
    assert "SG.wrong" not in repr(provider)


def test_an_unreachable_api_is_transient(closed_port, make_message):
    result = SendGridProvider(API_KEY, api_url=f"http://127.0.0.1:{closed_port}").send(make_message(), None)
    assert result.status == "transient" and "SendGrid unavailable" in result.error
