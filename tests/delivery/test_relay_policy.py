"""A relay the operator did not choose (an account's own SMTP settings) under a RelayPolicy: only public
addresses, resolved once and connected to as checked (no second lookup for DNS rebinding to answer), mail
ports only, TLS verified against the host name, and the server's words never passed on. Against real
servers on loopback (aiosmtpd, and a bare TCP server for greetings aiosmtpd will not send)."""
import socket
import ssl
import threading
from urllib.parse import quote

import pytest

from nudge.delivery.destinations import DestinationRefused, public_addresses, refusal
from nudge.delivery.message import compose, compose_skeleton
from nudge.delivery.smtp import ACCOUNT_SMTP_PORTS, RelayPolicy, SMTPProvider, parse_smtp_url

from .conftest import PASSWORD, USERNAME, free_port, self_signed_certificate

PUBLIC = "93.184.215.14"


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.5.4", "private"), ("192.168.0.10", "private"), ("fd12:3456::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.251", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("100.64.0.1", "not publicly routable"),                    # carrier-grade NAT
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),   # IPv4-mapped
    ("2002:7f00:1::", "loopback"),                              # 6to4 around 127.0.0.1
    ("64:ff9b::a00:1", "private"),                              # NAT64 to 10.0.0.1
    ("192.0.2.1", "private"), ("2001:db8::1", "private"),       # documentation ranges
    (PUBLIC, None), ("8.8.8.8", None), ("2001:4860:4860::8888", None),
])
def test_which_addresses_are_public(address, reason):
    assert refusal(address) == reason


def resolver(*answers):
    """resolve(host, port) answering each call with the next list of addresses; .calls counts them."""
    def resolve(host, port):
        resolve.calls.append(host)
        return list(answers[min(len(resolve.calls), len(answers)) - 1])
    resolve.calls = []
    return resolve


def test_one_private_answer_refuses_the_name():
    with pytest.raises(DestinationRefused) as exc:
        public_addresses("relay.test", 587, resolve=resolver([PUBLIC, "10.0.0.7"]))
    assert exc.value.reason == "private" and not exc.value.literal
    assert public_addresses("relay.test", 587, resolve=resolver([PUBLIC])) == [PUBLIC]
    assert public_addresses("relay.test", 587, allow_private=True, resolve=resolver(["10.0.0.7"])) == ["10.0.0.7"]


def test_a_name_that_does_not_resolve_is_refused():
    def unknown(host, port):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    with pytest.raises(DestinationRefused) as exc:
        public_addresses("nowhere.test", 25, resolve=unknown)
    assert exc.value.reason == "not found"


def send(provider, make_message):
    message = make_message()
    try:
        return provider.send(message, compose(compose_skeleton(message.from_email), message))
    finally:
        provider.close()


def guarded(server_port, host="127.0.0.1", tls="none", auth="", policy=None, **options):
    return SMTPProvider(settings=parse_smtp_url(f"smtp://{auth}{host}:{server_port}?tls={tls}"),
                        local_hostname="sender.test", policy=policy or RelayPolicy(), **options)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_a_loopback_relay_is_refused_at_connect_time_without_connecting(smtp_server, make_message, host):
    server = smtp_server()
    result = send(guarded(server.port, host, policy=RelayPolicy(ports=(*ACCOUNT_SMTP_PORTS, server.port))),
                  make_message)
    assert result.status == "transient"
    assert "not a public internet" in result.error or "does not resolve to public internet" in result.error
    assert server.connections == 0 and server.messages == []


@pytest.mark.parametrize("port", [22, 6379, 8025])
def test_ports_other_than_the_mail_ports_are_refused_at_connect_time(smtp_server, make_message, port):
    result = send(guarded(port, policy=RelayPolicy(allow_private=True)), make_message)
    assert result.status == "transient"
    assert f"port {port} is not allowed for an SMTP relay (use 25, 465, 587 or 2525)" in result.error


def test_the_checked_address_is_the_one_connected_to(smtp_server, make_message):
    """DNS rebinding: a name that answers one address when checked and another when connecting. The relay
    resolves once and connects to what it checked (here loopback is allowed, and the second answer is a
    closed port's address that would fail)."""
    server = smtp_server()
    rebinding = resolver(["127.0.0.1"], ["127.0.0.2"])
    policy = RelayPolicy(allow_private=True, ports=(server.port,), resolve=rebinding)
    result = send(guarded(server.port, "relay.test", policy=policy), make_message)
    assert result.status == "sent", result.error
    assert rebinding.calls == ["relay.test"] and len(server.messages) == 1


def test_tls_is_verified_against_the_host_name_not_the_address(smtp_server, make_message, tmp_path):
    """Connected to a checked address, STARTTLS still sends the host name (SNI) and checks the certificate
    against it."""
    cert = self_signed_certificate(tmp_path, ["relay.test"])
    server = smtp_server(tls="starttls", auth=True, server_certificate=cert)
    trusting = ssl.create_default_context(cafile=cert[0])
    policy = RelayPolicy(allow_private=True, ports=(server.port,), resolve=resolver(["127.0.0.1"]))
    auth = f"{quote(USERNAME, safe='')}:{quote(PASSWORD, safe='')}@"
    result = send(guarded(server.port, "relay.test", "starttls", auth, policy, ssl_context=trusting), make_message)
    assert result.status == "sent", result.error

    other = tmp_path / "other"
    other.mkdir()
    wrong = ssl.create_default_context(cafile=cert[0])
    wrong_name = self_signed_certificate(other, ["elsewhere.test"])
    server = smtp_server(tls="starttls", auth=True, server_certificate=wrong_name)
    wrong.load_verify_locations(wrong_name[0])
    policy = RelayPolicy(allow_private=True, ports=(server.port,), resolve=resolver(["127.0.0.1"]))
    result = send(guarded(server.port, "relay.test", "starttls", auth, policy, ssl_context=wrong), make_message)
    assert result.status == "transient"
    assert result.error.endswith("TLS handshake failed: the server's certificate is not valid for relay.test")
    assert server.messages == []


class Banner:
    """A bare TCP server that greets every connection with one line (e.g. an internal service's banner)."""

    def __init__(self, line):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.line = line
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.line)
                conn.recv(1024)

    def close(self):
        self.sock.close()


@pytest.fixture
def banner():
    servers = []

    def start(line):
        servers.append(Banner(line))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def test_a_refusing_greeting_is_told_in_our_words(banner, make_message):
    server = banner(b"554 5.7.1 internal-db-7.corp: secret-build-1234 says go away\r\n")
    policy = RelayPolicy(allow_private=True, ports=(server.port,))
    result = send(guarded(server.port, policy=policy), make_message)
    assert result.status == "transient"
    assert result.error == f"cannot connect to 127.0.0.1:{server.port}: the server refused the connection (554 5.7.1)"
    trusted = SMTPProvider(f"smtp://127.0.0.1:{server.port}", local_hostname="sender.test")
    assert "secret-build-1234" in send(trusted, make_message).error      # the operator's own relay: as it is


def test_a_service_that_is_not_smtp_is_not_echoed(banner, make_message):
    server = banner(b"-ERR unknown command 'EHLO', with args beginning with: redis_version:7.2.4\r\n")
    result = send(guarded(server.port, policy=RelayPolicy(allow_private=True, ports=(server.port,))), make_message)
    assert result.status == "transient" and "redis" not in result.error
    assert result.error == f"cannot connect to 127.0.0.1:{server.port}: the server did not answer as an SMTP server"


def test_wrong_credentials_and_refused_recipients_are_told_without_the_servers_words(smtp_server, make_message,
                                                                                     client_tls):
    server = smtp_server(tls="starttls", auth=True)
    policy = RelayPolicy(allow_private=True, ports=(server.port,))
    result = send(guarded(server.port, tls="starttls", auth=f"{quote(USERNAME, safe='')}:wrong@", policy=policy,
                          ssl_context=client_tls), make_message)
    assert result.error == (f"cannot connect to 127.0.0.1:{server.port}: authentication failed (535 5.7.8): "
                            "check the user name and password")
    assert "Authentication credentials invalid" not in result.error       # aiosmtpd's own words

    server = smtp_server()
    server.handler.reject["ann@example.org"] = "550 5.1.1 <ann@example.org>: unknown in table mailbox.internal"
    result = send(guarded(server.port, policy=RelayPolicy(allow_private=True, ports=(server.port,))), make_message)
    assert (result.status, result.error, result.bounce) == ("permanent", "recipient rejected: 550 5.1.1", True)


def test_a_closed_port_says_connection_refused(make_message):
    port = free_port()
    result = send(guarded(port, policy=RelayPolicy(allow_private=True, ports=(port,))), make_message)
    assert result.error == f"cannot connect to 127.0.0.1:{port}: connection refused"


def test_a_relay_without_starttls_is_refused_in_our_words(smtp_server, make_message):
    server = smtp_server()
    result = send(guarded(server.port, tls="starttls", policy=RelayPolicy(allow_private=True, ports=(server.port,))),
                  make_message)
    assert result.error == f"cannot connect to 127.0.0.1:{server.port}: the server does not offer STARTTLS"
    assert server.messages == []
