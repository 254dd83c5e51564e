"""Outbox provider: .eml files per account, listed newest first and read back safely."""
import os

import pytest

from nudge.delivery.message import compose, compose_skeleton
from nudge.delivery.outbox import OutboxProvider, count_outbox, list_outbox, read_message
from nudge.errors import NotFound

ACCOUNT = "0d5c8a3e-0a4b-4f1e-9a57-8f2b7d1c6e11"
OTHER = "7b1f3f7c-5a0e-4b8e-8c11-2f6c9b0e4d22"


@pytest.fixture
def outbox(tmp_path, make_message):
    """An outbox with three messages for ACCOUNT (ann, bob, cy in that order), one for OTHER, one global."""
    provider = OutboxProvider(str(tmp_path / "outbox"))
    skeleton = compose_skeleton("news@shop.example", "Shöp « News »", "help@shop.example")
    for address, account in [("ann@example.org", ACCOUNT), ("bob@example.org", ACCOUNT), ("cy@example.org", ACCOUNT),
                             ("dee@example.org", OTHER), ("eve@example.org", None)]:
        message = make_message(address, to_name=address.split("@")[0].title(), account_id=account)
        result = provider.send(message, compose(skeleton, message))
        assert result.status == "sent" and result.provider == "outbox"
    return str(tmp_path / "outbox")


def test_messages_are_files_per_account_listed_newest_first(outbox):
    assert sorted(os.listdir(outbox)) == sorted([ACCOUNT, OTHER, "global"])
    assert not [name for name in os.listdir(os.path.join(outbox, ACCOUNT)) if not name.endswith(".eml")]
    assert count_outbox(outbox, ACCOUNT) == 3
    entries = list_outbox(outbox, ACCOUNT, limit=50)
    assert [e.to for e in entries] == ["Cy <cy@example.org>", "Bob <bob@example.org>", "Ann <ann@example.org>"]
    first = entries[0]
    assert first.subject == "Nouveautés pour Cy ✨"
    assert first.from_ == "Shöp « News » <news@shop.example>"
    assert first.size == os.path.getsize(os.path.join(outbox, ACCOUNT, first.name))
    assert first.date >= entries[1].date >= entries[2].date
    assert [e.to for e in list_outbox(outbox, ACCOUNT, limit=1, offset=1)] == ["Bob <bob@example.org>"]
    assert [e.to for e in list_outbox(outbox, None)] == ["Eve <eve@example.org>"]
    assert list_outbox(outbox, "3f0e0000-0000-0000-0000-000000000000") == []


def test_read_message_shows_it_as_a_recipient_would(outbox, make_message):
    name = list_outbox(outbox, ACCOUNT)[-1].name
    shown = read_message(outbox, ACCOUNT, name)
    expected = make_message("ann@example.org", to_name="Ann")
    assert shown.html == expected.html and shown.text == expected.text
    headers = dict(shown.headers)
    assert headers["Subject"] == "Nouveautés pour Ann ✨"
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["Message-ID"] == expected.message_id


@pytest.mark.parametrize("name", [
    "../global/x.eml", "..", "/etc/passwd", "20250101T000000.000000Z-x.eml/../../secret.eml",
    "20250101T000000.000000Z-..%2Fsecret.eml", "20250101T000000.000000Z-x.txt", "", None,
])
def test_reading_anything_but_a_listed_name_is_not_found(outbox, name):
    with pytest.raises(NotFound):
        read_message(outbox, ACCOUNT, name)


def test_one_account_cannot_read_another_accounts_message(outbox):
    other_name = list_outbox(outbox, OTHER)[0].name
    with pytest.raises(NotFound):
        read_message(outbox, ACCOUNT, other_name)
    assert read_message(outbox, OTHER, other_name).text
    for account in ("..", "../" + OTHER, "global/..", "a/b"):
        with pytest.raises(NotFound):
            list_outbox(outbox, account)


def test_half_written_files_are_never_listed(outbox):
    folder = os.path.join(outbox, ACCOUNT)
    with open(os.path.join(folder, ".20990101T000000.000000Z-partial.eml.abcd.tmp"), "wb") as fh:
        fh.write(b"From: half")
    assert count_outbox(outbox, ACCOUNT) == 3
    assert all("partial" not in e.name for e in list_outbox(outbox, ACCOUNT))
