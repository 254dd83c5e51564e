"""Outgoing messages and a fast MIME composer.

`email.message.EmailMessage` costs ~2.4 ms per 20 KB message (PERFORMANCE-NOTES), which alone would cap a
worker at ~400 emails/s. Here what is common to a campaign (From, Reply-To, shared headers, the MIME
boundary and part headers) is encoded once in a Skeleton; per recipient only To, Subject, Date,
Message-ID, the recipient's own headers and the two bodies are encoded, by string joins and C codecs.

    skeleton = compose_skeleton("news@shop.example", "Shop", reply_to="help@shop.example")
    raw = compose(skeleton, OutgoingMessage(...))      # bytes, CRLF line endings, ready for SMTP

The output is plain RFC 5322/2045 bytes: non-ASCII header text as RFC 2047 encoded-words, lines folded
at 78 characters where possible, bodies in UTF-8, base64 (default) or quoted-printable.
"""
import binascii
import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field

import pybase64

# Line limits: RFC 5322 recommends 78 characters; an encoded-word line must stay within 76 (RFC 2047).
FOLD_AT = 78
ENCODED_LINE = 76
MAX_LINE = 998
BASE64 = "base64"
QUOTED_PRINTABLE = "quoted-printable"
TRANSFER_ENCODINGS = (BASE64, QUOTED_PRINTABLE)

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ATOMS = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~ ]*")
_HEADER_NAME = re.compile(r"[!-9;-~]+")
_ID_PART = re.compile(r"[A-Za-z0-9_-]+")
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class InvalidAddress(ValueError):
    """An address that cannot be put in a header or an SMTP envelope as it is."""


@dataclass(slots=True)
class OutgoingMessage:
    """One email to one recipient, already rendered (personalised, links rewritten)."""
    from_email: str
    to_email: str
    subject: str
    html: str
    text: str
    message_id: str
    from_name: str = ""
    to_name: str = ""
    reply_to: str | None = None
    # Extra headers in order, e.g. list_unsubscribe_headers(url) and ("X-Nudge-Message-Id", "…").
    headers: list = field(default_factory=list)
    # The SMTP envelope sender (Return-Path, where bounces go); the From address when None.
    envelope_from: str | None = None
    # Where the outbox files it (<outbox>/<account id>/); "global" when None.
    account_id: str | None = None

    @property
    def sender(self):
        return self.envelope_from or self.from_email


@dataclass(frozen=True, slots=True)
class Skeleton:
    """What a campaign's messages share, encoded once by compose_skeleton()."""
    from_email: str
    from_name: str
    reply_to: str | None
    from_line: str
    reply_to_line: str
    common: str
    transfer_encoding: str
    multipart_head: bytes
    text_head: bytes
    html_head: bytes
    separator: bytes
    closing: bytes


def message_id_for(campaign_id, contact_id, domain):
    """The Message-ID of one campaign's email to one contact: the same every time it is built.

    A repeat after a crash (the server said 250, the worker died before recording it) carries the same
    Message-ID, so it is recognisably the same message and receivers that collapse duplicates do so.
    """
    campaign_id, contact_id = str(campaign_id), str(contact_id)
    for part in (campaign_id, contact_id):
        if not _ID_PART.fullmatch(part):
            raise ValueError(f"message id parts must be letters, digits, '-' or '_': {part!r}")
    return f"<{campaign_id}.{contact_id}@{ascii_domain(domain)}>"


def parse_message_id(message_id):
    """(campaign_id, contact_id) from a Message-ID built by message_id_for(), else None."""
    local = (message_id or "").strip().strip("<>").split("@", 1)[0]
    campaign_id, _, contact_id = local.partition(".")
    if _ID_PART.fullmatch(campaign_id) and _ID_PART.fullmatch(contact_id):
        return campaign_id, contact_id
    return None


def list_unsubscribe_headers(unsubscribe_url):
    """The unsubscribe headers of a marketing email: RFC 2369's List-Unsubscribe with the https URL only, and
    RFC 8058's List-Unsubscribe-Post, so the mailbox provider's button unsubscribes with one POST.

    No mailto: nothing reads replies to an unsubscribe mailbox, and a header must only offer what works."""
    return [("List-Unsubscribe", f"<{unsubscribe_url}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]


def new_message_id(domain):
    """A random Message-ID, for one-off sends (test emails) that have no (campaign, contact)."""
    return f"<{secrets.token_hex(16)}@{ascii_domain(domain)}>"


def ascii_domain(domain):
    """The domain as ASCII (IDNA for internationalised names)."""
    domain = domain.strip().rstrip(".")
    if not domain or _CONTROL.search(domain) or any(c in domain for c in " <>@,;\"\\"):
        raise InvalidAddress(f"invalid domain: {domain!r}")
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidAddress(f"invalid domain: {domain!r}") from exc


def ascii_address(address):
    """local@domain with the domain in ASCII; a non-ASCII local part needs SMTPUTF8, which we do not use."""
    local, at, domain = (address or "").strip().rpartition("@")
    if not at or not local or not local.isascii() or _CONTROL.search(local) or any(c in local for c in " <>,;"):
        raise InvalidAddress(f"invalid address: {address!r}")
    return f"{local}@{ascii_domain(domain)}"


def domain_of(address):
    """The receiving domain of an address, lower-cased ("" when there is none)."""
    return address.rpartition("@")[2].strip().lower()


# -- headers -------------------------------------------------------------------------------------------

def _clean(value):
    """Header text without line breaks or control characters (no header injection)."""
    value = "" if value is None else str(value)
    return _CONTROL.sub(" ", value) if _CONTROL.search(value) else value


def _fold(prefix, tokens):
    """Join tokens with spaces, folding (CRLF + space) before a token that would pass FOLD_AT."""
    lines = []
    line = prefix
    for index, token in enumerate(tokens):
        if index == 0:
            line += token
        elif len(line) + 1 + len(token) > FOLD_AT and line.strip():
            lines.append(line)
            line = " " + token
        else:
            line += " " + token
    lines.append(line)
    return "\r\n".join(lines)


def _encoded_words(text, first_room):
    """RFC 2047 base64 encoded-words for text; the first fits in first_room characters, later ones
    in a continuation line (leading space) of ENCODED_LINE characters."""
    data = text.encode("utf-8")
    words = []
    start = 0
    room = first_room
    while start < len(data) or not words:
        size = max(8, (room - 12) // 4 * 4) // 4 * 3
        end = min(len(data), start + size)
        while start < end < len(data) and 0x80 <= data[end] < 0xC0:
            end -= 1        # never split a UTF-8 sequence between two words
        if end == start:    # room for less than one character: take the whole character anyway
            end += 1
            while end < len(data) and 0x80 <= data[end] < 0xC0:
                end += 1
        words.append("=?utf-8?b?" + binascii.b2a_base64(data[start:end], newline=False).decode("ascii") + "?=")
        start = end
        room = ENCODED_LINE - 1
    return words


def _needs_encoding(value):
    return not value.isascii() or "=?" in value


def header(name, value):
    """One header field, encoded and folded, without the trailing CRLF (an unstructured value)."""
    value = _clean(value).strip()
    prefix = name + ": "
    if not _needs_encoding(value):
        if len(prefix) + len(value) <= FOLD_AT:
            return prefix + value
        tokens = value.split(" ")
        if max(len(token) for token in tokens) <= MAX_LINE - len(prefix):
            return _fold(prefix, tokens)
    return _fold(prefix, _encoded_words(value, ENCODED_LINE - len(prefix)))


def address_header(name, email, display_name=""):
    """From/To/Reply-To: "Display Name <local@domain>", the name quoted or encoded as needed."""
    email = ascii_address(email)
    display_name = _clean(display_name).strip()
    prefix = name + ": "
    if not display_name:
        return prefix + email
    if _needs_encoding(display_name):
        tokens = _encoded_words(display_name, ENCODED_LINE - len(prefix))
    elif _ATOMS.fullmatch(display_name):
        tokens = display_name.split(" ")
    else:
        tokens = ['"' + display_name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    return _fold(prefix, tokens + ["<" + email + ">"])


_date_cache = (None, "")


def rfc5322_date(now=None):
    """The Date header value in UTC ("Tue, 04 Mar 2025 10:00:00 +0000"), cached per second."""
    global _date_cache
    second = int(time.time() if now is None else now)
    cached_second, text = _date_cache
    if cached_second != second:
        t = time.gmtime(second)
        text = (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000")
        _date_cache = (second, text)
    return text


def _bracketed(message_id):
    message_id = _clean(message_id).strip()
    if not message_id.startswith("<"):
        message_id = "<" + message_id + ">"
    if "@" not in message_id or " " in message_id:
        raise ValueError(f"invalid Message-ID: {message_id!r}")
    return message_id


# -- bodies --------------------------------------------------------------------------------------------

def _canonical_bytes(text):
    """UTF-8 with CRLF line endings (RFC 2045 canonical form of text)."""
    data = text.encode("utf-8")
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return data.replace(b"\n", b"\r\n")


def _base64_body(text):
    """Base64 in 76-character CRLF lines (RFC 2045). pybase64 encodes with SIMD and wraps in C: ~75 µs for a
    65 KB body where binascii plus slicing into lines in Python took ~290 µs."""
    return pybase64.encodebytes(_canonical_bytes(text)).replace(b"\n", b"\r\n").removesuffix(b"\r\n")


def _quoted_printable_body(text):
    data = _canonical_bytes(text)
    encoded = binascii.b2a_qp(data, False, True, False)
    # b2a_qp writes CRLF soft line breaks only if the input's first line break is CRLF; with none
    # in the input (one long line) it would write bare LFs.
    return encoded if b"\n" in data else encoded.replace(b"\n", b"\r\n")


_ENCODERS = {BASE64: _base64_body, QUOTED_PRINTABLE: _quoted_printable_body}


# -- composition ---------------------------------------------------------------------------------------

def compose_skeleton(from_email, from_name="", reply_to=None, headers=(), transfer_encoding=BASE64):
    """Encode what a campaign's messages share, once: From, Reply-To, common headers, the boundary.

    headers: extra (name, value) headers every message carries. transfer_encoding: "base64" (default,
    ~4x faster to produce here) or "quoted-printable" (smaller, readable source). compose() uses the
    skeleton's From/Reply-To when a message has the same ones, and encodes its own otherwise.
    """
    if transfer_encoding not in _ENCODERS:
        raise ValueError(f"transfer_encoding must be one of {TRANSFER_ENCODINGS}")
    # "=_" never occurs in base64 or quoted-printable output, so the boundary cannot collide with a body.
    boundary = "=_nudge_" + secrets.token_hex(12)
    common = "".join(_extra_header(name, value) + "\r\n" for name, value in headers)
    part = f"Content-Transfer-Encoding: {transfer_encoding}\r\n\r\n"
    return Skeleton(
        from_email=from_email, from_name=from_name or "", reply_to=reply_to,
        from_line=address_header("From", from_email, from_name),
        reply_to_line=address_header("Reply-To", reply_to) if reply_to else "",
        common=common + "MIME-Version: 1.0\r\n",
        transfer_encoding=transfer_encoding,
        multipart_head=(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
                        f"--{boundary}\r\n").encode("ascii"),
        text_head=('Content-Type: text/plain; charset="utf-8"\r\n' + part).encode("ascii"),
        html_head=('Content-Type: text/html; charset="utf-8"\r\n' + part).encode("ascii"),
        separator=f"\r\n--{boundary}\r\n".encode("ascii"),
        closing=f"\r\n--{boundary}--\r\n".encode("ascii"),
    )


def _extra_header(name, value):
    if not _HEADER_NAME.fullmatch(name or ""):
        raise ValueError(f"invalid header name: {name!r}")
    return header(name, value)


def compose(skeleton, message, now=None):
    """The message as RFC 5322 bytes (CRLF): multipart/alternative text + HTML, or one part if the
    other is empty. Raises InvalidAddress for an address that cannot be encoded (the caller records
    the recipient as failed) and ValueError for a malformed header name or Message-ID."""
    if message.from_email == skeleton.from_email and (message.from_name or "") == skeleton.from_name:
        from_line = skeleton.from_line
    else:
        from_line = address_header("From", message.from_email, message.from_name)
    if message.reply_to == skeleton.reply_to:
        reply_to_line = skeleton.reply_to_line
    else:
        reply_to_line = address_header("Reply-To", message.reply_to) if message.reply_to else ""
    lines = [
        from_line,
        address_header("To", message.to_email, message.to_name),
        header("Subject", message.subject),
        "Date: " + rfc5322_date(now),
        "Message-ID: " + _bracketed(message.message_id),
    ]
    if reply_to_line:
        lines.append(reply_to_line)
    for name, value in message.headers:
        lines.append(_extra_header(name, value))
    head = ("\r\n".join(lines) + "\r\n" + skeleton.common).encode("ascii")

    encode = _ENCODERS[skeleton.transfer_encoding]
    if message.text and message.html:
        return b"".join((head, skeleton.multipart_head, skeleton.text_head, encode(message.text),
                         skeleton.separator, skeleton.html_head, encode(message.html), skeleton.closing))
    # One part: the body runs to the end, so a final line break would become part of the content;
    # quoted-printable ends with a soft line break instead (base64 ignores line breaks).
    end = b"=\r\n" if skeleton.transfer_encoding == QUOTED_PRINTABLE else b"\r\n"
    if message.html:
        return b"".join((head, skeleton.html_head, encode(message.html), end))
    return b"".join((head, skeleton.text_head, encode(message.text or ""), end))


def compose_message(message, transfer_encoding=BASE64):
    """compose() for a one-off message (a test send), with a skeleton of its own."""
    skeleton = compose_skeleton(message.from_email, message.from_name, message.reply_to,
                                transfer_encoding=transfer_encoding)
    return compose(skeleton, message)


# -- DKIM ----------------------------------------------------------------------------------------------

DKIM_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "Reply-To", "List-Unsubscribe",
                "List-Unsubscribe-Post", "MIME-Version", "Content-Type")
_WSP_RUN = re.compile(rb"[ \t]+")
_WSP_EOL = re.compile(rb" \r\n")
_dkim_keys = {}


def _dkim_key(private_key_pem):
    """(algorithm tag, cryptography key) for a PEM private key, parsed once per key."""
    key = _dkim_keys.get(private_key_pem)
    if key is None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
        pem = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
        loaded = serialization.load_pem_private_key(pem, password=None)
        if isinstance(loaded, ed25519.Ed25519PrivateKey):
            key = ("ed25519-sha256", loaded)
        elif isinstance(loaded, rsa.RSAPrivateKey):
            if loaded.key_size < 1024:
                raise ValueError("DKIM RSA keys must have at least 1024 bits (2048 recommended)")
            key = ("rsa-sha256", loaded)
        else:
            raise ValueError("DKIM keys must be RSA or Ed25519")
        if len(_dkim_keys) > 256:
            _dkim_keys.clear()
        _dkim_keys[private_key_pem] = key
    return key


def _relaxed_header(field_bytes):
    """RFC 6376 3.4.2: lower-case name, unfolded value with whitespace runs as one space, trimmed."""
    name, _, value = field_bytes.partition(b":")
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.strip(b" \t").lower() + b":" + value + b"\r\n"


def _relaxed_body(body):
    """RFC 6376 3.4.4: whitespace runs as one space, none at line ends, no trailing empty lines."""
    if _needs_whitespace_pass(body):
        body = _WSP_EOL.sub(b"\r\n", _WSP_RUN.sub(b" ", body))
    body = body.rstrip(b"\r\n")
    return body + b"\r\n" if body else b""


def _needs_whitespace_pass(body, budget=64):
    """Whether relaxed canonicalization changes body: a tab, or a space before a space or a line end.

    Base64 bodies have spaces only in their few part headers: checking those with 1-byte finds takes
    microseconds, where the regex pass over 30 KB takes ~150 µs.
    """
    if b"\t" in body:
        return True
    index = body.find(b" ")
    while index >= 0:
        budget -= 1
        if budget < 0 or body[index + 1:index + 2] in (b" ", b"\r"):
            return True
        index = body.find(b" ", index + 1)
    return False


def _header_fields(head):
    """[(lower-case name, the field's bytes incl. continuation lines)] of a CRLF header block."""
    fields = []
    for line in head.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and fields:
            name, text = fields[-1]
            fields[-1] = (name, text + b"\r\n" + line)
        else:
            fields.append((line.split(b":", 1)[0].strip().lower(), line))
    return fields


def dkim_sign(raw, selector, domain, private_key_pem, now=None):
    """raw with a DKIM-Signature header prepended: relaxed/relaxed, RSA-SHA256 or Ed25519-SHA256 by key.

    Signs those of DKIM_HEADERS the message has. The signer is our own ~40 lines over `cryptography`
    (OpenSSL): dkimpy's pure-Python RSA costs ~7 ms a signature, OpenSSL's ~0.3 ms. The tests verify
    every signature with dkimpy (docs/performance.md, Delivery).
    """
    import base64
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    algorithm, key = _dkim_key(private_key_pem)
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise ValueError("a message needs a header and a body")
    fields = _header_fields(raw[:end])
    last = {name: text for name, text in fields}        # RFC 6376 5.4.2: the bottom-most instance
    names = [name.lower() for name in DKIM_HEADERS if name.lower().encode("ascii") in last]
    body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(raw[end + 4:])).digest()).decode("ascii")
    tags = [f"v=1; a={algorithm}; c=relaxed/relaxed; d={ascii_domain(domain)}; s={selector};",
            f"t={int(time.time() if now is None else now)}; h={':'.join(names)};",
            f"bh={body_hash};", "b="]
    unsigned = ("DKIM-Signature: " + "\r\n ".join(tags)).encode("ascii")
    data = b"".join(_relaxed_header(last[name.encode("ascii")]) for name in names)
    data += _relaxed_header(unsigned)[:-2]      # the signature header itself: b= empty, no CRLF
    if algorithm == "rsa-sha256":
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = key.sign(hashlib.sha256(data).digest())     # RFC 8463: Ed25519 over the SHA-256
    encoded = base64.b64encode(signature)
    folded = b"\r\n ".join(encoded[i:i + 72] for i in range(0, len(encoded), 72))
    return unsigned + b"\r\n " + folded + b"\r\n" + raw


def dkim_public_record(private_key_pem):
    """The DNS TXT record (v=DKIM1; k=...; p=...) publishing the public half of a DKIM key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    public = _dkim_key(private_key_pem)[1].public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        data = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        kind = "ed25519"
    else:
        data = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        kind = "rsa"
    return f"v=DKIM1; k={kind}; p={binascii.b2a_base64(data, newline=False).decode('ascii')}"
