"""MIME composition and DKIM signing cost per message.

    .venv/bin/python bench/mime.py [--runs 7] [--number 300]

Builds the same personalised ~20 KB newsletter (HTML + a text part, non-ASCII subject and names,
List-Unsubscribe headers) three ways and prints µs per message (median of --runs runs):
- nudge.delivery.message.compose() from a per-campaign skeleton, base64 and quoted-printable bodies;
- email.message.EmailMessage + set_content/add_alternative + as_bytes(), the same two encodings;
then DKIM signing of the composed message: ours (cryptography/OpenSSL) and dkimpy's own signer, with
RSA-2048 and Ed25519 keys. Each composed message is checked to parse back before timing. Times are
CPU time of the process (time.process_time), so other load on the machine inflates them less.
"""
import argparse
import os
import statistics
import sys
import time
import timeit
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import formataddr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nudge.delivery.message import (  # noqa: E402
    BASE64, QUOTED_PRINTABLE, OutgoingMessage, compose, compose_skeleton, dkim_sign, message_id_for,
)

ROW = ('<tr><td class="item"><a href="https://shop.example/c/{token}">Nouveauté n°{n}: {title}</a>'
       '<p>Découvrez notre sélection de printemps, livrée en 48 h partout en Europe.</p></td></tr>\n')


def newsletter(name, size=20_000):
    """A table-based newsletter of about `size` bytes with tracked links, personalised for name."""
    parts = [f'<!doctype html><html><body><table width="100%"><tr><td><h1>Bonjour {name},</h1></td></tr>\n']
    n = 0
    while sum(len(p) for p in parts) < size - 200:
        n += 1
        parts.append(ROW.format(token=f"{n:04d}{'ab' * 20}", n=n, title="Édition limitée"))
    parts.append('<tr><td><a href="https://shop.example/u/tok">Se désabonner</a> · Shop, 1 rue X, Paris</td></tr>'
                 "</table></body></html>\n")
    return "".join(parts)


def plain_text(name):
    return (f"Bonjour {name},\n\n" + "Découvrez notre sélection de printemps: https://shop.example/c/0001\n" * 40
            + "\n-- \nShop, 1 rue X, Paris\nSe désabonner: https://shop.example/u/tok\n")


def sample_message():
    name = "Zoë Martín"
    return OutgoingMessage(
        from_email="news@shop.example", from_name="Shöp News", to_email="zoe@example.org", to_name=name,
        subject=f"{name}, nos nouveautés de printemps ✨", html=newsletter(name), text=plain_text(name),
        message_id=message_id_for("5f1c7c8e-4d3b-4b7a-9f21-0c2b1e6a9d10", "9a8b7c6d-1111-2222-3333-444455556666",
                                  "shop.example"),
        reply_to="help@shop.example",
        headers=[("List-Unsubscribe", "<https://shop.example/u/tok>, <mailto:unsub@shop.example?subject=tok>"),
                 ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"), ("X-Nudge-Message-Id", "m-1")])


def email_message(message, cte):
    msg = EmailMessage()
    msg["From"] = formataddr((message.from_name, message.from_email))
    msg["To"] = formataddr((message.to_name, message.to_email))
    msg["Subject"] = message.subject
    msg["Message-ID"] = message.message_id
    msg["Reply-To"] = message.reply_to
    for name, value in message.headers:
        msg[name] = value
    msg.set_content(message.text, cte=cte)
    msg.add_alternative(message.html, subtype="html", cte=cte)
    return msg.as_bytes(policy=policy.SMTP)


def per_message_us(fn, runs, number):
    # CPU time of this process: on a shared machine wall time would count other processes' turns.
    timings = timeit.repeat(fn, number=number, repeat=runs, timer=time.process_time)
    return statistics.median(timings) / number * 1e6


def check(raw, message):
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    assert parsed["Subject"] == message.subject
    assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n") == message.html


def keys():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
    fmt = (serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {"RSA-2048": rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(*fmt),
            "Ed25519": ed25519.Ed25519PrivateKey.generate().private_bytes(*fmt)}


def dkimpy_sign(raw, pem, algorithm):
    """dkimpy's own signer, for comparison (its RSA is pure Python)."""
    import base64

    import dkim
    from cryptography.hazmat.primitives import serialization
    if algorithm == b"ed25519-sha256":
        key = serialization.load_pem_private_key(pem, None)
        pem = base64.b64encode(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                 serialization.NoEncryption()))
    return dkim.sign(raw, b"s1", b"shop.example", pem, canonicalize=(b"relaxed", b"relaxed"),
                     signature_algorithm=algorithm,
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id", b"mime-version"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--number", type=int, default=300)
    args = parser.parse_args()
    message = sample_message()
    print(f"message: HTML {len(message.html.encode()):,} bytes + text {len(message.text.encode()):,} bytes; "
          f"median of {args.runs} runs x {args.number}, CPU time")
    print(f"{'what':58} {'µs/message':>11} {'bytes':>8}")
    results = {}
    for encoding in (BASE64, QUOTED_PRINTABLE):
        skeleton = compose_skeleton(message.from_email, message.from_name, message.reply_to,
                                    transfer_encoding=encoding)
        raw = compose(skeleton, message)
        check(raw, message)
        results[encoding] = raw
        us = per_message_us(lambda: compose(skeleton, message), args.runs, args.number)
        print(f"{'compose() from a skeleton, ' + encoding:58} {us:11.0f} {len(raw):8,}")
    for encoding in (BASE64, QUOTED_PRINTABLE):
        raw = email_message(message, encoding)
        check(raw, message)
        us = per_message_us(lambda: email_message(message, encoding), args.runs, max(20, args.number // 10))
        print(f"{'EmailMessage + as_bytes(), ' + encoding:58} {us:11.0f} {len(raw):8,}")

    raw = results[BASE64]
    for label, pem in keys().items():
        algorithm = b"rsa-sha256" if label.startswith("RSA") else b"ed25519-sha256"
        us = per_message_us(lambda: dkim_sign(raw, "s1", "shop.example", pem), args.runs, args.number // 3)
        print(f"{'dkim_sign() ' + label + ' (cryptography/OpenSSL)':58} {us:11.0f}")
        try:
            us = per_message_us(lambda: dkimpy_sign(raw, pem, algorithm), min(args.runs, 3), 10)
        except ImportError:
            continue
        print(f"{'dkimpy dkim.sign() ' + label + ' (for comparison)':58} {us:11.0f}")


if __name__ == "__main__":
    main()
