"""SMTP relay provider: NUDGE_SMTP_URL=smtp://[user:pass@]host:port[?tls=ssl|starttls].

One SMTPProvider keeps one connection open and reuses it for every send (no connect, TLS handshake
and AUTH per message). It is not thread-safe: give each sending thread its own instance
(nudge.delivery.base.PerThread). When the server advertises PIPELINING (Postfix, most relays), MAIL,
RCPT and DATA go out in one write, so a message costs two round trips instead of four.
SMTPProvider.send_each sends a wave — one message on each of several connections — with the round trips
of all of them overlapped: a thread blocks twice per wave instead of twice per message (measured on this
machine: 25 µs of client CPU per message instead of ~300 with a thread per connection).

An account's own relay (settings typed by a tenant) gets a RelayPolicy: its port must be one of
ACCOUNT_SMTP_PORTS, its host is resolved once and every address checked (destinations.public_addresses:
no loopback, private, link-local, multicast or reserved address), the connection goes to a checked
address while the host name stays for TLS (SNI and certificate check), and the server's replies are
never passed on as they are: errors are our own words plus the reply's status codes (the raw reply
goes to the debug log). The operator's NUDGE_SMTP_URL has no policy: it is trusted.

A connection found dead before the message body was sent (an idle connection the server dropped, a
421 "closing") is reopened and the message retried once. Once the body has been sent, a lost
connection is reported as transient and never retried here: the server may have accepted it, and the
pipeline decides (the Message-ID stays the same, so a repeat is recognisably the same message).
"""
import functools
import logging
import re
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from nudge.delivery.base import Backoff, Provider, SendResult
from nudge.delivery.destinations import REASON_WORDS, DestinationRefused, connect_any, public_addresses
from nudge.delivery.message import InvalidAddress, ascii_address

log = logging.getLogger("nudge.delivery.smtp")

TLS_MODES = ("none", "ssl", "starttls")
DEFAULT_PORTS = {"none": 25, "ssl": 465, "starttls": 587}
# 530 authentication or STARTTLS required, 534/538 mechanism or encryption required, 535 bad
# credentials: the relay's settings are wrong, not the recipient; another provider may do.
RELAY_CONFIG_CODES = (530, 534, 535, 538)
# RFC 3463 enhanced status codes: x.1.y are about the address (5.1.1 no such user, 5.1.2 no such domain,
# 5.1.10 null MX), 5.2.1 a disabled mailbox. 5.7.y (policy: relay denied, blocklisted sender) and the rest
# are about us or the message, never a reason to suppress the recipient.
_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
ADDRESS_REJECTION_CODES = (550, 551, 553)
_QUEUE_ID = re.compile(r"queued as ([A-Za-z0-9._-]+)", re.I)
# The ports an account's own relay may use: SMTP (25), submission over TLS (465), submission (587) and the
# common alternative (2525). Anything else is some other service, not a mail relay.
ACCOUNT_SMTP_PORTS = (25, 465, 587, 2525)
_PERIODS = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class SMTPSettings:
    host: str
    port: int
    tls: str = "none"
    username: str | None = None
    password: str | None = field(default=None, repr=False)    # never printed or logged
    cafile: str | None = None
    timeout: float = 30.0


def parse_smtp_url(url):
    """SMTPSettings from smtp://[user:pass@]host[:port][?tls=ssl|starttls&cafile=…&timeout=…].

    User and password are percent-decoded (write @ as %40, : as %3A). smtps:// means tls=ssl. The port
    defaults to 465 with ssl, 587 with starttls, 25 otherwise. Errors never repeat the URL (it holds
    the password).
    """
    parts = urlsplit((url or "").strip())
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("NUDGE_SMTP_URL must start with smtp:// or smtps://")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = set(query) - {"tls", "cafile", "timeout"}
    if unknown:
        raise ValueError(f"NUDGE_SMTP_URL: unknown option(s) {', '.join(sorted(unknown))}")
    tls = (query.get("tls", ["ssl" if parts.scheme == "smtps" else "none"])[-1] or "none").lower()
    if tls not in TLS_MODES:
        raise ValueError("NUDGE_SMTP_URL: tls must be ssl or starttls")
    try:
        port = parts.port or DEFAULT_PORTS[tls]
        timeout = float(query.get("timeout", ["30"])[-1])
    except ValueError as exc:
        raise ValueError("NUDGE_SMTP_URL: invalid port or timeout") from exc
    if not parts.hostname:
        raise ValueError("NUDGE_SMTP_URL: missing host")
    return SMTPSettings(
        host=parts.hostname, port=port, tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        cafile=query.get("cafile", [None])[-1] or None, timeout=timeout)


@functools.lru_cache(maxsize=1)
def _local_hostname():
    return socket.getfqdn()


def _dot_stuffed(raw):
    """raw as DATA content: a '.' starting a line doubled (RFC 5321 4.5.2), ending with CRLF.CRLF.

    smtplib runs its dot-quoting regex on every message (~160 µs per 33 KB here); a base64 body has no dots,
    so looking for a line that starts with one first is nearly free.
    """
    if _has_dot_line(raw):
        raw = _PERIODS.sub(b"..", raw)
    if not raw.endswith(b"\r\n"):
        raw += b"\r\n"
    return raw + b".\r\n"


def _has_dot_line(raw, budget=64):
    """Whether a line of raw starts with '.'. Walks the dots with 1-byte finds (a base64 body has
    none; the header's few are checked one by one): ~10x faster than searching for b"\\n."."""
    index = raw.find(b".")
    while index >= 0:
        if index == 0 or raw[index - 1] == 10:
            return True
        budget -= 1
        if budget < 0:
            return b"\n." in raw
        index = raw.find(b".", index + 1)
    return False


def is_address_rejection(reply):
    """Whether a 5xx reply to RCPT says the address does not exist or takes no mail (a hard bounce), as
    opposed to a refusal of the sender or the relay ("relay access denied"), which must never suppress
    the recipient: a misconfigured relay would otherwise mark a whole list bounced."""
    code, text = reply
    if not 500 <= code < 600:
        return False
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    enhanced = _ENHANCED.match(text)
    if enhanced:
        subject, detail = enhanced.group(2), enhanced.group(3)
        return subject == "1" or (subject, detail) == ("2", "1")
    return code in ADDRESS_REJECTION_CODES and "relay" not in text.lower()


@dataclass(slots=True)
class _Transaction:
    """One message between its envelope and its final reply."""
    message: object
    raw: bytes
    sender: str
    recipient: str
    data: bytes
    fresh: bool                 # sent on a connection opened for it (a failure is not a stale connection)
    retry: bool                 # may be sent once more on a new connection if this one was stale
    replies: tuple | None = None    # the envelope's replies, when they were read one by one (no PIPELINING)


def _reply_text(reply):
    code, text = reply
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {' '.join(text.split())}".strip()


def _reply_codes(reply):
    """A reply's status code and enhanced status code ("550 5.1.1"), without the server's words."""
    code, text = reply
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    enhanced = _ENHANCED.match(text)
    return f"{code} {'.'.join(enhanced.groups())}" if enhanced else str(code)


# Connection failures in our words, most specific first (the exception's own text may quote the server).
_NETWORK_ERRORS = ((ssl.SSLError, "TLS handshake failed"),
                   (smtplib.SMTPServerDisconnected, "the server closed the connection"),
                   (ConnectionRefusedError, "connection refused"),
                   (TimeoutError, "connection timed out"))


class PortRefused(Exception):
    """The relay's port is not one the policy allows (the message says which are)."""


@dataclass(frozen=True)
class RelayPolicy:
    """Rules for a relay the operator did not choose (an account's own): the ports it may use, whether private
    addresses are allowed (ACCOUNT_SMTP_ALLOW_PRIVATE, for relays on the operator's LAN), and the resolver
    (system_resolve unless given: tests pass their own)."""
    allow_private: bool = False
    ports: tuple = ACCOUNT_SMTP_PORTS
    resolve: object = None

    def port_refusal(self, port):
        """Why this port is not allowed, or None."""
        if port in self.ports:
            return None
        return f"port {port} is not allowed for an SMTP relay (use {_listed(self.ports)})"

    def addresses(self, host, port):
        """The checked addresses to connect to; DestinationRefused otherwise."""
        return public_addresses(host, port, allow_private=self.allow_private, resolve=self.resolve)


def _listed(ports):
    ports = [str(port) for port in ports]
    return ", ".join(ports[:-1]) + " or " + ports[-1] if len(ports) > 1 else ports[0]


def destination_error(exc):
    """Our words for a refused relay host (the same whether it does not resolve or resolves to a private
    address: a tenant must not learn which internal names exist)."""
    if exc.literal:
        return f"the relay's address is {REASON_WORDS[exc.reason]}, not a public internet one"
    return "the relay's host name does not resolve to public internet addresses only"


class _PinnedSMTP(smtplib.SMTP):
    """smtplib.SMTP connected to addresses checked beforehand, never looking the name up again (DNS rebinding);
    the host name is kept for STARTTLS (SNI and the certificate check)."""

    def __init__(self, addresses, *args, **kwargs):
        self._addresses = addresses
        super().__init__(*args, **kwargs)

    def _get_socket(self, host, port, timeout):
        return connect_any(self._addresses, port, timeout, self.source_address)


class _PinnedSMTPSSL(smtplib.SMTP_SSL, _PinnedSMTP):
    """Implicit TLS over _PinnedSMTP's connection (SMTP_SSL wraps what _PinnedSMTP._get_socket returns)."""

    def __init__(self, addresses, *args, **kwargs):
        self._addresses = addresses
        smtplib.SMTP_SSL.__init__(self, *args, **kwargs)


class SMTPProvider(Provider):
    """Send raw messages through one SMTP relay over a persistent connection (one instance per thread)."""
    name = "smtp"
    overlaps_connections = True

    def __init__(self, url=None, *, settings=None, ssl_context=None, local_hostname=None,
                 idle_check=15.0, pipelining=True, name=None, policy=None):
        self.settings = settings or parse_smtp_url(url)
        self.policy = policy        # a RelayPolicy for a relay the operator did not choose; None: trusted
        self.ssl_context = ssl_context
        self.local_hostname = local_hostname
        self.idle_check = idle_check
        self.pipelining = pipelining
        if name:
            self.name = name
        self.backoff = Backoff()
        self._conn = None
        self._last_used = 0.0

    def __repr__(self):
        return f"<SMTPProvider {self.settings.host}:{self.settings.port} tls={self.settings.tls}>"

    # -- connection --------------------------------------------------------------------------------

    def _context(self):
        if self.ssl_context is None:
            self.ssl_context = ssl.create_default_context(cafile=self.settings.cafile)
        return self.ssl_context

    def _open(self):
        """Connect, EHLO, STARTTLS and AUTH as configured; returns an error text or None."""
        s = self.settings
        hostname = self.local_hostname or _local_hostname()
        conn = None
        try:
            conn = self._connect(hostname)
            conn.ehlo_or_helo_if_needed()
            if s.tls == "starttls":
                conn.starttls(context=self._context())
                conn.ehlo()
            if s.username:
                conn.login(s.username, s.password or "")
        except DestinationRefused as exc:
            error = f"cannot connect to {s.host}:{s.port}: {destination_error(exc)}"
        except PortRefused as exc:
            error = f"cannot connect to {s.host}:{s.port}: {exc}"
        except (smtplib.SMTPException, OSError) as exc:
            error = self._connect_error(exc) if self.policy else self._trusted_connect_error(exc)
        else:
            self._conn = conn
            self._last_used = time.monotonic()
            self.backoff.succeeded()
            return None
        if conn is not None:
            conn.close()
        self.backoff.failed(error)
        return error

    def _connect(self, hostname):
        """The connected smtplib client (greeting read): straight to the host for a trusted relay, else to
        the policy's checked addresses."""
        s = self.settings
        if self.policy is None:
            if s.tls == "ssl":
                return smtplib.SMTP_SSL(s.host, s.port, local_hostname=hostname, timeout=s.timeout,
                                        context=self._context())
            return smtplib.SMTP(s.host, s.port, local_hostname=hostname, timeout=s.timeout)
        refused = self.policy.port_refusal(s.port)
        if refused:
            raise PortRefused(refused)
        addresses = self.policy.addresses(s.host, s.port)
        if s.tls == "ssl":
            return _PinnedSMTPSSL(addresses, s.host, s.port, local_hostname=hostname, timeout=s.timeout,
                                  context=self._context())
        return _PinnedSMTP(addresses, s.host, s.port, local_hostname=hostname, timeout=s.timeout)

    def _trusted_connect_error(self, exc):
        """The operator's own relay: the server's reply as it is (the operator reads it)."""
        s = self.settings
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return f"SMTP authentication failed: {_reply_text((exc.smtp_code, exc.smtp_error))}"
        if isinstance(exc, smtplib.SMTPResponseException):
            return f"SMTP connection refused: {_reply_text((exc.smtp_code, exc.smtp_error))}"
        return f"cannot connect to {s.host}:{s.port}: {exc.__class__.__name__}: {exc}"

    def _connect_error(self, exc):
        """A relay a tenant chose: our own words (and the status code), never the server's reply text, which
        could be anything the machine at that address says. The raw reply goes to the debug log."""
        s = self.settings
        if isinstance(exc, smtplib.SMTPResponseException):
            log.debug("relay %s:%s refused the session: %s", s.host, s.port,
                      _reply_text((exc.smtp_code, exc.smtp_error)))
            codes = _reply_codes((exc.smtp_code, exc.smtp_error))
            if not 200 <= exc.smtp_code < 600:
                what = "the server did not answer as an SMTP server"
            elif isinstance(exc, smtplib.SMTPAuthenticationError):
                what = f"authentication failed ({codes}): check the user name and password"
            elif isinstance(exc, smtplib.SMTPConnectError):
                what = f"the server refused the connection ({codes})"
            else:
                what = f"the server refused the session ({codes})"
        else:
            log.debug("relay %s:%s: %s: %s", s.host, s.port, exc.__class__.__name__, exc)
            what = self._network_error(exc)
        return f"cannot connect to {s.host}:{s.port}: {what}"

    def _network_error(self, exc):
        """Our words for a connection that failed below SMTP, or a server that lacks what we need."""
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"TLS handshake failed: the server's certificate is not valid for {self.settings.host}"
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            return ("the server does not offer STARTTLS" if "STARTTLS" in str(exc)
                    else "the server does not offer sign-in (AUTH)")
        if isinstance(exc, smtplib.SMTPException) and "authentication method" in str(exc):
            return "the server offers no sign-in method we support"
        for kind, words in _NETWORK_ERRORS:
            if isinstance(exc, kind):
                return words
        return "connection failed"

    def _reply(self, reply):
        """A reply as the user may see it: in full from the operator's relay, only its codes from another."""
        if self.policy is None:
            return _reply_text(reply)
        log.debug("relay %s:%s replied: %s", self.settings.host, self.settings.port, _reply_text(reply))
        return _reply_codes(reply)

    def _drop(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
            self._conn = None

    def keepalive(self):
        """NOOP on an open connection (a pipeline waiting between batches); drops it if dead."""
        if self._conn is None:
            return False
        try:
            code, _ = self._conn.noop()
        except (smtplib.SMTPException, OSError):
            code = None
        if code != 250:
            self._drop()
            return False
        self._last_used = time.monotonic()
        return True

    def close(self):
        if self._conn is not None:
            try:
                self._conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._drop()

    # -- sending -----------------------------------------------------------------------------------

    def send(self, message, raw):
        return self.send_each([self], [(message, raw)])[0]

    @staticmethod
    def send_each(providers, items):
        """send(message, raw) of items[i] through providers[i] — distinct connections — with the round trips
        of all of them overlapped: every envelope goes out (pipelined), then every reply is read and every
        body sent, then every final reply is read. A wave of N messages costs two round trips instead of 2N,
        and the sending thread blocks twice per wave instead of twice per message."""
        if len({id(provider) for provider in providers}) != len(providers):
            raise ValueError("send_each needs a distinct connection per message")
        results = [None] * len(items)
        begun = []
        try:
            for index, (provider, (message, raw)) in enumerate(zip(providers, items)):
                outcome = provider._begin(message, raw)
                if isinstance(outcome, SendResult):
                    results[index] = outcome
                else:
                    begun.append((index, provider, outcome))
            sending = []
            for index, provider, transaction in begun:
                outcome = provider._send_body(transaction)
                if outcome is None:
                    sending.append((index, provider, transaction))
                else:
                    results[index] = outcome
            for index, provider, transaction in sending:
                results[index] = provider._finish(transaction)
        except BaseException:
            # Something unexpected (or the thread being stopped) mid-wave: a connection left between an
            # envelope and its final reply would read the wrong replies next time. Drop those.
            for index, provider, _ in begun:
                if results[index] is None:
                    provider._drop()
            raise
        return results

    def _begin(self, message, raw, retry=True):
        """Open the connection if needed and send the envelope; a _Transaction, or the SendResult when the
        message cannot start (invalid address, no connection)."""
        wait = self.backoff.remaining()
        if wait and self._conn is None:
            return self.transient(f"{self.backoff.reason} (next attempt in {wait:.0f}s)", retry_after=wait)
        try:
            sender = ascii_address(message.sender)
            recipient = ascii_address(message.to_email)
        except InvalidAddress as exc:
            return self.permanent(str(exc))
        if self._conn is not None and time.monotonic() - self._last_used > self.idle_check:
            self.keepalive()
        fresh = self._conn is None
        if fresh:
            error = self._open()
            if error:
                return self.transient(error, retry_after=self.backoff.remaining())
        transaction = _Transaction(message, raw, sender, recipient, _dot_stuffed(raw), fresh, retry)
        conn = self._conn
        size = f" SIZE={len(transaction.data)}" if "size" in conn.esmtp_features else ""
        try:
            if self.pipelining and "pipelining" in conn.esmtp_features:
                conn.send(f"MAIL FROM:<{sender}>{size}\r\nRCPT TO:<{recipient}>\r\nDATA\r\n".encode("ascii"))
            else:
                transaction.replies = self._stepwise(conn, sender, recipient, size)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            return self._lost(transaction, f"connection lost at MAIL FROM: {exc}", before_body=True)
        return transaction

    def _send_body(self, transaction):
        """Read the envelope's replies and send the body: None once it is sent, else the SendResult."""
        conn = self._conn
        try:
            mail, rcpt, data_reply = transaction.replies or (conn.getreply(), conn.getreply(), conn.getreply())
            if 421 in (mail[0], rcpt and rcpt[0]):
                closing = mail if mail[0] == 421 else rcpt
                return self._lost(transaction, f"server closing the connection: {self._reply(closing)}",
                                  before_body=True)
            refused = self._refused(mail, rcpt, data_reply)
            if refused is not None:
                if data_reply and data_reply[0] == 354:
                    conn.send(b".\r\n")     # DATA was accepted in the pipeline: end it empty
                    conn.getreply()
                self._reset()
                self._last_used = time.monotonic()
                return refused
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            return self._lost(transaction, f"connection lost at MAIL FROM: {exc}", before_body=True)
        try:
            conn.send(transaction.data)
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            return self._lost(transaction, f"connection lost at DATA: {exc}", before_body=False)
        return None

    def _finish(self, transaction):
        """Read the reply to the body: the message's SendResult."""
        try:
            reply = self._conn.getreply()
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            return self._lost(transaction, f"connection lost at DATA: {exc}", before_body=False)
        self._last_used = time.monotonic()
        code = reply[0]
        if 200 <= code < 300:
            match = _QUEUE_ID.search(reply[1].decode("utf-8", "replace"))
            return self.sent(match.group(1) if match else None)
        if code == 421:
            self._drop()
        return self._failure("message rejected", reply)

    def _lost(self, transaction, error, before_body):
        """The connection died. Before the body was sent, on a connection that was not fresh (an idle one
        the server dropped), reconnect and send once more; after it, the server may have the message:
        transient, never retried here."""
        self._drop()
        if before_body and transaction.retry and not transaction.fresh:
            outcome = self._begin(transaction.message, transaction.raw, retry=False)
            if isinstance(outcome, SendResult):
                return outcome
            return self._send_body(outcome) or self._finish(outcome)
        return self.transient(error)

    @staticmethod
    def _stepwise(conn, sender, recipient, size):
        conn.putcmd("mail", f"FROM:<{sender}>{size}")
        mail = conn.getreply()
        if mail[0] != 250:
            return mail, None, None
        conn.putcmd("rcpt", f"TO:<{recipient}>")
        rcpt = conn.getreply()
        if rcpt[0] not in (250, 251):
            return mail, rcpt, None
        conn.putcmd("data")
        return mail, rcpt, conn.getreply()

    def _refused(self, mail, rcpt, data_reply):
        """The classified failure of MAIL, RCPT or DATA, or None when the body may follow."""
        if mail[0] != 250:
            return self._failure("sender rejected", mail)
        if rcpt[0] not in (250, 251):
            # RFC 5321 4.5.3.1.10: a 552 to RCPT ("too much mail") is to be treated as temporary.
            if rcpt[0] == 552:
                return self.transient(f"recipient deferred: {self._reply(rcpt)}")
            return self._failure("recipient rejected", rcpt, bounce=is_address_rejection(rcpt))
        if data_reply is None or data_reply[0] != 354:
            return self._failure("DATA refused", data_reply or (-1, b"no reply"))
        return None

    def _failure(self, what, reply, bounce=False):
        """Classify a refusal; bounce=True (the address itself refused) makes a 5xx a hard bounce."""
        text = f"{what}: {self._reply(reply)}"
        if reply[0] in RELAY_CONFIG_CODES:
            where = "your SMTP settings" if self.policy else "NUDGE_SMTP_URL"
            return self.transient(f"relay refused us (check {where}): {text}")
        if 500 <= reply[0] < 600:
            return self.permanent(text, bounce=bounce)
        return self.transient(text)

    def _reset(self):
        try:
            self._conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()
