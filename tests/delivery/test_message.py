"""The MIME composer's bytes, read back by the stdlib email parser; Message-IDs; DKIM verified by dkimpy."""
import email.utils
from email.header import decode_header, make_header
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from nudge.delivery.message import (
    BASE64, QUOTED_PRINTABLE, InvalidAddress, OutgoingMessage, compose, compose_message, compose_skeleton,
    dkim_public_record, dkim_sign, list_unsubscribe_headers, message_id_for, new_message_id, parse_message_id,
)


def parse(raw):
    return BytesParser(policy=policy.default).parsebytes(raw)


def body(parsed, subtype):
    return parsed.get_body((subtype,)).get_content().replace("\r\n", "\n")


def lines(raw):
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF"
    assert b"\r" not in raw.replace(b"\r\n", b""), "bare CR"
    return raw.split(b"\r\n")


@pytest.mark.parametrize("encoding", [BASE64, QUOTED_PRINTABLE])
def test_composed_message_parses_back_to_what_was_given(make_message, encoding):
    message = make_message("ann@example.org")
    skeleton = compose_skeleton(message.from_email, message.from_name, message.reply_to,
                                headers=[("X-Campaign", "March")], transfer_encoding=encoding)
    raw = compose(skeleton, message)
    parsed = parse(raw)

    assert parsed["Subject"] == "Nouveautés pour Ann Oñate ✨"
    assert parsed["From"].addresses[0].display_name == "Shöp « News »"
    assert parsed["From"].addresses[0].addr_spec == "news@shop.example"
    assert parsed["To"].addresses[0].display_name == "Ann Oñate"
    assert parsed["To"].addresses[0].addr_spec == "ann@example.org"
    assert parsed["Reply-To"].addresses[0].addr_spec == "help@shop.example"
    assert parsed["Message-ID"] == "<c0ffee.ann@shop.example>"
    assert parsed["List-Unsubscribe"] == "<https://shop.example/t/u/tok123>"
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert parsed["X-Nudge-Message-Id"] == "m-ann"
    assert parsed["X-Campaign"] == "March"
    assert parsed["MIME-Version"] == "1.0"
    assert email.utils.parsedate_to_datetime(parsed["Date"]).utcoffset().total_seconds() == 0
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" and p["Content-Transfer-Encoding"] == encoding for p in parts)
    assert body(parsed, "plain") == message.text
    assert body(parsed, "html") == message.html
    assert not parsed.defects and not any(p.defects for p in parts)
    assert max(len(line) for line in lines(raw)) <= 78


def test_list_unsubscribe_offers_only_the_one_click_url_the_product_processes():
    """No mailto: the product reads no mailbox, so only the RFC 8058 https URL is advertised, with its POST."""
    url = "https://mail.shop.example/t/u/" + "A" * 59
    assert list_unsubscribe_headers(url) == [("List-Unsubscribe", f"<{url}>"),
                                              ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]


def test_headers_fold_and_encode_and_never_inject(make_message):
    long_ascii = "Our big spring sale: " + " ".join(f"word{i}" for i in range(40))
    message = make_message(subject=long_ascii + "\r\nBcc: victim@example.org", to_name='Bob "Bobby" Smith, Jr.',
                           from_name="Plain Sender")
    raw = compose(compose_skeleton(message.from_email, "Other"), message)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in lines(head))
    parsed = parse(raw)
    assert parsed["Subject"] == long_ascii + "  Bcc: victim@example.org"
    assert parsed["Bcc"] is None
    assert parsed["To"].addresses[0].display_name == 'Bob "Bobby" Smith, Jr.'
    assert parsed["From"].addresses[0].display_name == "Plain Sender"     # the message's own, not the skeleton's


@pytest.mark.parametrize("subject", ["😀" * 40, "é", "a" * 30 + "€" * 30, "=?utf-8?q?not_encoded?= literally"])
def test_non_ascii_and_tricky_subjects_round_trip(make_message, subject):
    message = make_message(subject=subject, to_name="Zoë 😀 " * 12)
    raw = compose_message(message)
    parsed = parse(raw)
    assert parsed["Subject"] == subject
    # RFC 2047 decoding (the stdlib's address parser keeps the folding space between encoded-words,
    # even in what its own generator writes; mail clients drop it as the RFC says).
    to_value = raw.split(b"\r\nTo: ", 1)[1].split(b" <ann@example.org>", 1)[0].decode()
    assert str(make_header(decode_header(to_value))) == ("Zoë 😀 " * 12).strip()
    assert all(len(line) <= 78 for line in lines(raw.split(b"\r\n\r\n", 1)[0]))


def test_long_lines_and_single_part_messages(make_message):
    long_line = "x" * 5000 + " é " + "y" * 3000
    for encoding in (BASE64, QUOTED_PRINTABLE):
        html_only = make_message(text="", html=long_line)
        parsed = parse(compose_message(html_only, transfer_encoding=encoding))
        assert parsed.get_content_type() == "text/html" and parsed.get_content() == long_line
        text_only = make_message(html="", text=long_line)
        raw = compose_message(text_only, transfer_encoding=encoding)
        assert max(len(line) for line in lines(raw)) <= 78
        assert parse(raw).get_content_type() == "text/plain" and parse(raw).get_content() == long_line


def test_same_content_as_email_message_would_produce(make_message):
    message = make_message()
    reference = EmailMessage()
    reference["From"] = email.utils.formataddr((message.from_name, message.from_email))
    reference["To"] = email.utils.formataddr((message.to_name, message.to_email))
    reference["Subject"] = message.subject
    reference.set_content(message.text)
    reference.add_alternative(message.html, subtype="html")
    ours, theirs = parse(compose_message(message)), parse(reference.as_bytes())
    for name in ("From", "To", "Subject"):
        assert str(ours[name]) == str(theirs[name])
    for subtype in ("plain", "html"):
        assert body(ours, subtype) == body(theirs, subtype)


def test_message_ids_are_deterministic_per_campaign_and_contact():
    first = message_id_for("3f2a-77", "c9_01", "Shop.Example")
    assert first == message_id_for("3f2a-77", "c9_01", "shop.example") == "<3f2a-77.c9_01@shop.example>"
    assert first != message_id_for("3f2a-77", "c9_02", "shop.example")
    assert parse_message_id(first) == ("3f2a-77", "c9_01")
    assert parse_message_id("<random@elsewhere>") is None
    assert message_id_for("c", "k", "bücher.example") == "<c.k@xn--bcher-kva.example>"
    assert new_message_id("shop.example") != new_message_id("shop.example")
    with pytest.raises(ValueError):
        message_id_for("c>", "k", "shop.example")


def test_unencodable_addresses_raise(make_message):
    with pytest.raises(InvalidAddress):
        compose_message(make_message(to_email="jörg@example.org"))
    with pytest.raises(InvalidAddress):
        compose_message(make_message(to_email="ann@exa mple.org"))
    parsed = parse(compose_message(make_message(to_email="ann@bücher.example")))
    assert parsed["To"].addresses[0].domain == "xn--bcher-kva.example"


def _pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def dkim_keys():
    return {"rsa": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "ed25519": _pem(ed25519.Ed25519PrivateKey.generate())}


def dns_for(records):
    """dkimpy's dnsfunc: answers TXT queries for <selector>._domainkey.<domain> from records."""
    return lambda name, timeout=5: records.get(name.decode().rstrip("."), b"")


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("encoding", [BASE64, QUOTED_PRINTABLE])
def test_dkim_signature_verifies_with_dkimpy(make_message, dkim_keys, kind, encoding):
    message = make_message(text="Two  spaces\tand a tab, trailing space   \n" + make_message().text)
    raw = compose(compose_skeleton(message.from_email, message.from_name, transfer_encoding=encoding), message)
    signed = dkim_sign(raw, "s2025", "shop.example", dkim_keys[kind])
    dns = dns_for({"s2025._domainkey.shop.example": dkim_public_record(dkim_keys[kind]).encode()})
    assert dkim.verify(signed, dnsfunc=dns)
    signature = parse(signed)["DKIM-Signature"]
    assert f"a={kind}-sha256" in signature and "d=shop.example" in signature
    assert "h=from:to:subject:date:message-id:reply-to:list-unsubscribe:list-unsubscribe-post:mime-version" \
           ":content-type" in signature.replace(" ", "")

    tampered = signed.replace(b"Subject: ", b"Subject: Re: ", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)
    wrong_key = dns_for({"s2025._domainkey.shop.example": dkim_public_record(
        _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))).encode()})
    assert not dkim.verify(signed, dnsfunc=wrong_key)


def test_dkim_signs_only_headers_present(dkim_keys):
    message = OutgoingMessage(from_email="a@shop.example", to_email="b@example.org", subject="Hi", html="",
                              text="hello\n", message_id="<x@shop.example>")
    signed = dkim_sign(compose_message(message), "sel", "shop.example", dkim_keys["rsa"])
    h = parse(signed)["DKIM-Signature"].replace(" ", "").split("h=")[1].split(";")[0]
    assert h == "from:to:subject:date:message-id:mime-version:content-type"
    assert dkim.verify(signed, dnsfunc=dns_for({"sel._domainkey.shop.example":
                                                dkim_public_record(dkim_keys["rsa"]).encode()}))
