"""Outbox provider: every message becomes an .eml file instead of leaving the machine.

<NUDGE_OUTBOX_DIR, default <instance>/outbox>/<account id or "global">/<UTC timestamp>-<message id>.eml,
written to a temporary name and renamed, so a reader never sees half a file. It is the `make run`
default, and the dashboard's Outbox page reads it back with list_outbox() / read_message().
"""
import datetime
import os
import re
import secrets
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser, BytesParser

from nudge.delivery.base import Provider
from nudge.errors import NotFound

GLOBAL = "global"
_ACCOUNT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_NAME = re.compile(r"(\d{8}T\d{6}\.\d{6}Z)-[A-Za-z0-9._@+-]{1,200}\.eml")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._@+-]")
_TIMESTAMP = "%Y%m%dT%H%M%S.%fZ"
HEADER_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    name: str
    date: datetime.datetime     # when it was written, naive UTC
    from_: str
    to: str
    subject: str
    size: int


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    name: str
    headers: list       # [(name, decoded value)] in order
    html: str
    text: str
    size: int


def account_dir(directory, account_id):
    """The folder of one account's messages (GLOBAL for messages sent without an account)."""
    account = str(account_id) if account_id is not None else GLOBAL
    if not _ACCOUNT.fullmatch(account):
        raise NotFound("No such outbox.")
    return os.path.join(directory, account)


def file_name(message_id, now=None):
    """<UTC timestamp>-<message id, file-name safe>.eml; names sort by time."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    safe = _UNSAFE_CHARS.sub("_", (message_id or "").strip().strip("<>"))[:200] or "message"
    return f"{now.strftime(_TIMESTAMP)}-{safe}.eml"


class OutboxProvider(Provider):
    """Write each message to the outbox folder; always "sent" unless the disk write fails."""
    name = "outbox"

    def __init__(self, directory, *, name=None):
        self.directory = os.path.abspath(directory)
        if name:
            self.name = name
        self._made = set()

    def send(self, message, raw):
        try:
            folder = account_dir(self.directory, message.account_id)
        except NotFound:
            return self.permanent(f"invalid account id for the outbox: {message.account_id!r}")
        name = file_name(message.message_id)
        try:
            if folder not in self._made:
                os.makedirs(folder, exist_ok=True)
                self._made.add(folder)
            write_atomically(os.path.join(folder, name), raw)
        except OSError as exc:
            return self.transient(f"outbox write failed: {exc}")
        return self.sent(name)


def write_atomically(path, data):
    """Write data to a temporary file beside path, then rename it into place."""
    folder, base = os.path.split(path)
    temporary = os.path.join(folder, f".{base}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as fh:
            fh.write(data)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _names(directory, account_id):
    folder = account_dir(directory, account_id)
    try:
        with os.scandir(folder) as entries:
            return folder, sorted((e.name for e in entries if _NAME.fullmatch(e.name)), reverse=True)
    except FileNotFoundError:
        return folder, []


def count_outbox(directory, account_id):
    """How many messages an account's outbox holds."""
    return len(_names(directory, account_id)[1])


def list_outbox(directory, account_id, limit=50, offset=0):
    """One page of an account's outbox, newest first: [OutboxEntry] (headers decoded)."""
    folder, names = _names(directory, account_id)
    entries = []
    parser = BytesHeaderParser(policy=policy.default)
    for name in names[max(0, offset):max(0, offset) + max(0, limit)]:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as fh:
                head = fh.read(HEADER_BYTES)
            size = os.path.getsize(path)
        except FileNotFoundError:
            continue
        headers = parser.parsebytes(head.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
        entries.append(OutboxEntry(
            name=name, date=_written_at(name), from_=str(headers.get("From", "")),
            to=str(headers.get("To", "")), subject=str(headers.get("Subject", "")), size=size))
    return entries


def _written_at(name):
    stamp = _NAME.fullmatch(name).group(1)
    return datetime.datetime.strptime(stamp, _TIMESTAMP)


def read_message(directory, account_id, name):
    """One outbox message as a recipient's client would show it: OutboxMessage(headers, html, text).

    name must be a name list_outbox() returned: anything else (a path, '..', another account's file)
    raises NotFound.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise NotFound("No such message in the outbox.")
    folder = account_dir(directory, account_id)
    path = os.path.join(folder, name)
    if os.path.dirname(os.path.realpath(path)) != os.path.realpath(folder):
        raise NotFound("No such message in the outbox.")
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, IsADirectoryError):
        raise NotFound("No such message in the outbox.") from None
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    return OutboxMessage(name=name, headers=[(k, str(v)) for k, v in parsed.items()],
                         html=_part(parsed, "html"), text=_part(parsed, "plain"), size=len(raw))


def _part(parsed, subtype):
    part = parsed.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return ""
    return part.get_content().replace("\r\n", "\n")
