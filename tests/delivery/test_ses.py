"""SES provider against moto's server (SESv2 over HTTP on loopback) and a throttling endpoint."""
import json
import threading
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.ses.models import ses_backends

from nudge.delivery.message import compose, compose_skeleton
from nudge.delivery.ses import SESProvider

from .conftest import free_port

REGION = "eu-west-1"


@pytest.fixture(autouse=True)
def aws_environment(monkeypatch, tmp_path):
    """Test credentials only; no profile or config file from the machine."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_CONFIG_FILE": str(tmp_path / "none"),
                        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture(scope="module")
def moto_url():
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def verified_sender(moto_url):
    client = boto3.client("sesv2", region_name=REGION, endpoint_url=moto_url, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_email_identity(EmailIdentity="news@shop.example")
    backend = ses_backends[DEFAULT_ACCOUNT_ID][REGION]
    backend.sent_messages.clear()
    return backend


def test_sends_the_raw_message_through_sesv2(moto_url, verified_sender, make_message):
    provider = SESProvider(REGION, endpoint_url=moto_url)
    skeleton = compose_skeleton("news@shop.example", "Shop")
    sent = []
    for address in ("ann@example.org", "bob@example.org"):
        message = make_message(address)
        raw = compose(skeleton, message)
        result = provider.send(message, raw)
        assert result.status == "sent", result.error
        assert result.provider == "ses" and result.provider_message_id
        sent.append((message, raw, result.provider_message_id))
    provider.close()

    stored = {m.id: m for m in verified_sender.sent_messages}
    for message, raw, message_id in sent:
        assert message.to_email in stored[message_id].destinations
        assert stored[message_id].raw_data.encode() == raw
        parsed = BytesParser(policy=policy.default).parsebytes(stored[message_id].raw_data.encode())
        assert parsed["Message-ID"] == message.message_id
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_an_unverified_sender_is_rejected_permanently(moto_url, verified_sender, make_message):
    provider = SESProvider(REGION, endpoint_url=moto_url)
    message = make_message(from_email="stranger@elsewhere.example")
    result = provider.send(message, compose(compose_skeleton(message.from_email), message))
    assert result.status == "permanent" and "MessageRejected" in result.error
    assert verified_sender.sent_messages == []


def test_an_unreachable_endpoint_is_transient(closed_port, make_message):
    provider = SESProvider(REGION, endpoint_url=f"http://127.0.0.1:{closed_port}")
    message = make_message()
    result = provider.send(message, compose(compose_skeleton(message.from_email), message))
    assert result.status == "transient" and "SES unavailable" in result.error


class _ErrorEndpoint(BaseHTTPRequestHandler):
    """Answers every SESv2 call with the error the test chose (status, error type)."""
    answer = (429, "TooManyRequestsException")
    calls = 0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).calls += 1
        status, error_type = self.answer
        body = json.dumps({"message": "Maximum sending rate exceeded."}).encode()
        self.send_response(status)
        self.send_header("x-amzn-ErrorType", error_type)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("answer, status", [
    ((429, "TooManyRequestsException"), "transient"),
    ((500, "InternalFailure"), "transient"),
    ((400, "BadRequestException"), "permanent"),
])
def test_throttling_and_server_errors_are_transient(make_message, answer, status):
    handler = type("Endpoint", (_ErrorEndpoint,), {"answer": answer, "calls": 0})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        provider = SESProvider(REGION, endpoint_url=f"http://127.0.0.1:{server.server_address[1]}")
        message = make_message()
        result = provider.send(message, compose(compose_skeleton(message.from_email), message))
    finally:
        server.shutdown()
        server.server_close()
    assert result.status == status and answer[1] in result.error
    assert handler.calls == 1       # no retry loop inside the provider: the pipeline defers
