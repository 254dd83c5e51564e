"""SMTP provider against a real aiosmtpd server on loopback: what arrives, rejections, TLS, AUTH,
reconnects and connection reuse."""
import threading
from email import policy
from email.parser import BytesParser
from urllib.parse import quote

import pytest

from nudge.delivery.base import PerThread
from nudge.delivery.message import QUOTED_PRINTABLE, compose, compose_skeleton
from nudge.delivery.smtp import SMTPProvider, parse_smtp_url

from .conftest import PASSWORD, USERNAME


def provider_for(server, **options):
    return SMTPProvider(f"smtp://127.0.0.1:{server.port}", local_hostname="sender.test", **options)


@pytest.mark.parametrize("pipelining", [False, True])
@pytest.mark.parametrize("encoding", ["base64", QUOTED_PRINTABLE])
def test_each_recipient_gets_one_exact_copy_over_one_connection(smtp_server, make_message, pipelining, encoding):
    server = smtp_server(pipelining=pipelining)
    skeleton = compose_skeleton("news@shop.example", "Shöp « News »", "help@shop.example", transfer_encoding=encoding)
    recipients = ["ann@example.org", "bob@example.net", "cy@example.com"]
    sent = {}
    with provider_for(server) as provider:
        for address in recipients:
            message = make_message(address, to_name=address[:3].title(), envelope_from="bounces@shop.example")
            raw = compose(skeleton, message)
            result = provider.send(message, raw)
            assert result.status == "sent", result.error
            assert result.provider == "smtp" and result.provider_message_id.startswith("Q")
            sent[address] = (message, raw)

    assert server.connections == 1
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(recipients)
    for received in server.messages:
        message, raw = sent[received.rcpt_tos[0]]
        assert received.rcpt_tos == [message.to_email]
        assert received.mail_from == "bounces@shop.example"
        assert received.content == raw       # byte for byte, dot-stuffing undone by the server
        parsed = BytesParser(policy=policy.default).parsebytes(received.content)
        assert parsed["To"].addresses[0].username + "@" + parsed["To"].addresses[0].domain == message.to_email
        assert parsed["Subject"] == f"Nouveautés pour {message.to_name} ✨"
        assert parsed["Message-ID"] == message.message_id
        assert parsed.get_body(("plain",)).get_content().replace("\r\n", "\n") == message.text
        assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n") == message.html


def send_each(server, make_message, addresses):
    """{address: SendResult} of one message to each address, over one connection."""
    skeleton = compose_skeleton("news@shop.example", "Shop")
    results = {}
    with provider_for(server) as provider:
        for address in addresses:
            message = make_message(address)
            results[address] = provider.send(message, compose(skeleton, message))
    return results


@pytest.mark.parametrize("pipelining", [False, True])
def test_rejected_recipients_are_classified_and_the_connection_stays_usable(smtp_server, make_message, pipelining):
    server = smtp_server(pipelining=pipelining)
    server.handler.reject = {
        "gone@example.org": "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown",
        "later@example.org": "451 4.7.1 Greylisted, try again later",
        "full@example.org": "552 5.2.2 Mailbox full",
    }
    results = send_each(server, make_message, ["gone@example.org", "later@example.org", "full@example.org",
                                               "ok@example.org"])

    gone = results["gone@example.org"]
    assert gone.status == "permanent"
    assert "550 5.1.1" in gone.error and "User unknown" in gone.error
    assert results["later@example.org"].status == "transient" and "451" in results["later@example.org"].error
    assert results["full@example.org"].status == "transient"     # RFC 5321: 552 to RCPT is temporary
    assert results["ok@example.org"].status == "sent"
    assert [m.rcpt_tos for m in server.messages] == [["ok@example.org"]]
    assert server.connections == 1


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_recipient_the_server_does_not_know_is_a_hard_bounce(smtp_server, make_message, pipelining):
    server = smtp_server(pipelining=pipelining)
    server.handler.reject = {
        "gone@example.org": "550 5.1.1 <gone@example.org>: Recipient address rejected: User unknown",
        "nodomain@example.invalid": "553 Requested action not taken: mailbox name not allowed",
        "relay@elsewhere.example": "554 5.7.1 <relay@elsewhere.example>: Relay access denied",
        "old@example.org": "550 Relaying denied",
        "later@example.org": "450 4.2.0 Mailbox busy",
    }
    results = send_each(server, make_message, [*server.handler.reject, "ok@example.org"])

    assert results["gone@example.org"].status == "permanent" and results["gone@example.org"].bounce is True
    assert results["nodomain@example.invalid"].bounce is True
    # The relay refusing us is permanent for this message but says nothing about the address.
    assert results["relay@elsewhere.example"].status == "permanent"
    assert results["relay@elsewhere.example"].bounce is False and results["old@example.org"].bounce is False
    assert results["later@example.org"].status == "transient" and results["later@example.org"].bounce is False
    assert results["ok@example.org"].status == "sent" and results["ok@example.org"].bounce is False


@pytest.mark.parametrize("reply, bounce", [
    ((550, b"5.1.1 User unknown"), True),
    ((550, b"5.1.10 Recipient address rejected: null MX"), True),
    ((550, b"5.2.1 Mailbox disabled"), True),
    ((550, b"5.2.2 Mailbox full"), False),
    ((550, b"5.7.1 Service unavailable; client host blocked"), False),
    ((551, b"User not local"), True),
    ((554, b"Transaction failed"), False),
    ((452, b"4.1.1 try later"), False),
])
def test_which_rcpt_refusals_are_address_rejections(reply, bounce):
    from nudge.delivery.smtp import is_address_rejection
    assert is_address_rejection(reply) is bounce


def test_reconnects_when_the_server_dropped_the_connection(smtp_server, make_message):
    server = smtp_server()
    skeleton = compose_skeleton("news@shop.example")
    with provider_for(server) as provider:
        first = make_message("ann@example.org")
        assert provider.send(first, compose(skeleton, first)).status == "sent"
        server.drop_connections()
        second = make_message("bob@example.org")
        result = provider.send(second, compose(skeleton, second))
    assert result.status == "sent", result.error
    assert [m.rcpt_tos for m in server.messages] == [["ann@example.org"], ["bob@example.org"]]
    assert server.connections == 2


def test_starttls_and_auth_with_percent_encoded_credentials(smtp_server, make_message, certificate):
    server = smtp_server(tls="starttls", auth=True)
    url = (f"smtp://{quote(USERNAME, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}"
           f"?tls=starttls&cafile={quote(certificate[0])}")
    provider = SMTPProvider(url, local_hostname="sender.test")
    message = make_message()
    result = provider.send(message, compose(compose_skeleton(message.from_email), message))
    provider.close()
    assert result.status == "sent", result.error
    assert len(server.messages) == 1
    assert PASSWORD not in repr(provider) and PASSWORD not in repr(provider.settings)


def test_wrong_password_is_transient_and_sends_nothing(smtp_server, make_message, client_tls):
    server = smtp_server(tls="starttls", auth=True)
    provider = SMTPProvider(f"smtp://{quote(USERNAME, safe='')}:wrong-secret@127.0.0.1:{server.port}?tls=starttls",
                            ssl_context=client_tls, local_hostname="sender.test")
    message = make_message()
    result = provider.send(message, compose(compose_skeleton(message.from_email), message))
    assert result.status == "transient"
    assert "authentication failed" in result.error and "wrong-secret" not in result.error
    assert server.messages == []


def test_a_relay_demanding_starttls_of_a_plain_client_is_a_transient_configuration_error(smtp_server, make_message):
    server = smtp_server(tls="starttls")
    message = make_message()
    with provider_for(server) as provider:
        result = provider.send(message, compose(compose_skeleton(message.from_email), message))
    assert result.status == "transient" and "530" in result.error and "NUDGE_SMTP_URL" in result.error
    assert server.messages == []


def test_implicit_tls(smtp_server, make_message, client_tls):
    server = smtp_server(tls="ssl", auth=True)
    provider = SMTPProvider(f"smtp://{quote(USERNAME, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}"
                            "?tls=ssl", ssl_context=client_tls, local_hostname="sender.test")
    message = make_message()
    result = provider.send(message, compose(compose_skeleton(message.from_email), message))
    provider.close()
    assert result.status == "sent", result.error
    assert server.messages[0].content.startswith(b"From: ")


def test_a_server_that_is_down_is_transient_and_not_retried_per_message(closed_port, make_message):
    provider = SMTPProvider(f"smtp://127.0.0.1:{closed_port}", local_hostname="sender.test")
    message = make_message()
    raw = compose(compose_skeleton(message.from_email), message)
    first = provider.send(message, raw)
    assert first.status == "transient" and "cannot connect" in first.error
    second = provider.send(message, raw)     # within the back-off: answered without a connection attempt
    assert second.status == "transient" and "next attempt in" in second.error and second.retry_after > 0


def test_invalid_recipient_address_is_permanent(smtp_server, make_message):
    server = smtp_server()
    message = make_message("ann@example.org")
    raw = compose(compose_skeleton(message.from_email), message)
    message.to_email = "bad\r\nRCPT TO:<victim@example.org>"
    with provider_for(server) as provider:
        result = provider.send(message, raw)
    assert result.status == "permanent" and "invalid address" in result.error
    assert server.messages == []


@pytest.mark.parametrize("url, expected", [
    ("smtp://relay.example.com", ("relay.example.com", 25, "none", None, None)),
    ("smtp://relay.example.com?tls=starttls", ("relay.example.com", 587, "starttls", None, None)),
    ("smtps://u:p@relay.example.com", ("relay.example.com", 465, "ssl", "u", "p")),
    ("smtp://apikey:SG.a%2Fb%3Dc@smtp.sendgrid.net:2525?tls=starttls",
     ("smtp.sendgrid.net", 2525, "starttls", "apikey", "SG.a/b=c")),
    ("smtp://user%40shop.example:p%40ss@[::1]:1025?tls=ssl", ("::1", 1025, "ssl", "user@shop.example", "p@ss")),
])
def test_smtp_url_parsing(url, expected):
    s = parse_smtp_url(url)
    assert (s.host, s.port, s.tls, s.username, s.password) == expected


@pytest.mark.parametrize("url", ["http://relay", "smtp://relay?tls=tls", "smtp://relay?verify=no", "smtp://:25",
                                 "smtp://u:secret@relay:notaport"])
def test_bad_smtp_urls_are_rejected_without_echoing_the_password(url):
    with pytest.raises(ValueError) as caught:
        parse_smtp_url(url)
    assert "secret" not in str(caught.value)


def test_keepalive_notices_a_dropped_connection_and_the_next_send_reconnects(smtp_server, make_message):
    server = smtp_server()
    skeleton = compose_skeleton("news@shop.example")
    with provider_for(server) as provider:
        assert provider.keepalive() is False            # nothing open yet
        first = make_message("ann@example.org")
        provider.send(first, compose(skeleton, first))
        assert provider.keepalive() is True
        server.drop_connections()
        assert provider.keepalive() is False
        second = make_message("bob@example.org")
        assert provider.send(second, compose(skeleton, second)).status == "sent"
    assert len(server.messages) == 2 and server.connections == 2


def test_sending_threads_each_use_their_own_connection(smtp_server, make_message):
    server = smtp_server(pipelining=True)
    providers = PerThread(lambda: provider_for(server))
    skeleton = compose_skeleton("news@shop.example")
    results = []

    def worker(offset):
        for i in range(offset, 40, 4):
            message = make_message(f"user{i}@example.org")
            results.append(providers.get().send(message, compose(skeleton, message)).status)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    providers.close_all()
    assert results == ["sent"] * 40
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(f"user{i}@example.org" for i in range(40))
    assert server.connections == 4


def _wave(server, make_message, addresses, connections, **options):
    """(providers, {address: SendResult}) of one message to each address, sent in waves over `connections`
    connections with SMTPProvider.send_each."""
    skeleton = compose_skeleton("news@shop.example", "Shop")
    providers = [provider_for(server, **options) for _ in range(connections)]
    results = {}
    for start in range(0, len(addresses), connections):
        wave = addresses[start:start + connections]
        items = [(message, compose(skeleton, message)) for message in map(make_message, wave)]
        results.update(zip(wave, SMTPProvider.send_each(providers[:len(wave)], items)))
    return providers, results


@pytest.mark.parametrize("pipelining", [False, True])
def test_a_wave_sends_one_message_on_each_connection_at_once(smtp_server, make_message, pipelining):
    server = smtp_server(pipelining=pipelining)
    server.handler.reject = {"gone@example.org": "550 5.1.1 <gone@example.org>: User unknown",
                             "later@example.org": "451 4.7.1 Greylisted, try again later"}
    addresses = [f"user{n}@example.org" for n in range(10)]
    addresses[3:3] = ["gone@example.org"]
    addresses[7:7] = ["later@example.org"]
    providers, results = _wave(server, make_message, addresses, connections=4)
    for provider in providers:
        provider.close()

    assert results["gone@example.org"].status == "permanent" and results["gone@example.org"].bounce is True
    assert results["later@example.org"].status == "transient"
    assert all(results[address].status == "sent" for address in addresses if address.startswith("user"))
    # Every accepted message arrived once, and a refusal on one connection did not disturb the others.
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(a for a in addresses if a.startswith("user"))
    assert server.connections == 4


def test_a_connection_the_server_dropped_between_waves_is_reopened_and_the_message_sent(smtp_server, make_message):
    server = smtp_server(pipelining=True)
    skeleton = compose_skeleton("news@shop.example")
    providers = [provider_for(server) for _ in range(3)]
    first = [make_message(f"first{n}@example.org") for n in range(3)]
    assert [r.status for r in SMTPProvider.send_each(providers, [(m, compose(skeleton, m)) for m in first])] \
        == ["sent"] * 3
    server.drop_connections()
    second = [make_message(f"second{n}@example.org") for n in range(3)]
    results = SMTPProvider.send_each(providers, [(m, compose(skeleton, m)) for m in second])
    for provider in providers:
        provider.close()
    assert [r.status for r in results] == ["sent"] * 3, [r.error for r in results]
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(m.to_email for m in first + second)
    assert server.connections == 6


def test_a_wave_over_starttls_with_auth(smtp_server, make_message, client_tls):
    server = smtp_server(tls="starttls", auth=True, pipelining=True)
    url = f"smtp://{quote(USERNAME, safe='')}:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}?tls=starttls"
    skeleton = compose_skeleton("news@shop.example")
    providers = [SMTPProvider(url, ssl_context=client_tls, local_hostname="sender.test") for _ in range(3)]
    messages = [make_message(f"tls{n}@example.org") for n in range(3)]
    results = SMTPProvider.send_each(providers, [(m, compose(skeleton, m)) for m in messages])
    for provider in providers:
        provider.close()
    assert [r.status for r in results] == ["sent"] * 3, [r.error for r in results]
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(m.to_email for m in messages)


def test_one_connection_cannot_carry_two_messages_of_a_wave(smtp_server, make_message):
    server = smtp_server()
    provider = provider_for(server)
    message = make_message("ann@example.org")
    with pytest.raises(ValueError):
        SMTPProvider.send_each([provider, provider], [(message, b"x"), (message, b"x")])
    assert server.messages == []


def test_a_wave_interrupted_midway_leaves_no_connection_between_an_envelope_and_its_reply(
        smtp_server, make_message, monkeypatch):
    server = smtp_server(pipelining=True)
    skeleton = compose_skeleton("news@shop.example")
    providers = [provider_for(server) for _ in range(3)]
    messages = [make_message(f"cut{n}@example.org") for n in range(3)]
    items = [(m, compose(skeleton, m)) for m in messages]
    finish = SMTPProvider._finish
    calls = []

    def interrupted(self, transaction):
        calls.append(transaction)
        if len(calls) == 2:
            raise KeyboardInterrupt      # the worker being stopped with two replies still unread
        return finish(self, transaction)
    monkeypatch.setattr(SMTPProvider, "_finish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        SMTPProvider.send_each(providers, items)
    monkeypatch.undo()
    assert providers[0]._conn is not None and providers[1]._conn is None and providers[2]._conn is None
    # The next wave on the same providers is answered correctly.
    again = [make_message(f"again{n}@example.org") for n in range(3)]
    results = SMTPProvider.send_each(providers, [(m, compose(skeleton, m)) for m in again])
    for provider in providers:
        provider.close()
    assert [r.status for r in results] == ["sent"] * 3, [r.error for r in results]
    assert {m.rcpt_tos[0] for m in server.messages} >= {m.to_email for m in again}
