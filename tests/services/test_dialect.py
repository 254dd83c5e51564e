"""The dialect helpers give the same answers on PostgreSQL and SQLite."""
import sqlalchemy as sa

from nudge.extensions import db
from nudge.models import Contact, EmailEvent, Suppression
from nudge.services import dialect, events, suppressions


def _contacts(account, *tag_lists):
    contacts = [Contact(account_id=account.id, email=f"c{i}@x.example", tags=tags, custom_fields={"a": 1, "b": 2})
                for i, tags in enumerate(tag_lists)]
    db.session.add_all(contacts)
    db.session.commit()
    return contacts


def _emails(condition):
    return sorted(db.session.scalars(sa.select(Contact.email).where(condition)))


def test_tag_conditions(app, make_account):
    account, _ = make_account()
    _contacts(account, ["vip", "news"], ["news"], None, [])
    assert _emails(dialect.tags_contain_any(Contact.tags, ["vip", "other"])) == ["c0@x.example"]
    assert _emails(dialect.tags_contain_any(Contact.tags, ["news"])) == ["c0@x.example", "c1@x.example"]
    assert _emails(dialect.tags_contain_all(Contact.tags, ["news", "vip"])) == ["c0@x.example"]
    assert _emails(sa.not_(dialect.tags_contain_any(Contact.tags, ["news"]))) == ["c2@x.example", "c3@x.example"]


def test_adding_and_removing_tags_in_one_update(app, make_account):
    account, _ = make_account()
    _contacts(account, ["b", "a"], None, ["c"])
    db.session.execute(sa.update(Contact).values(tags=dialect.tags_with(Contact.tags, ["a", "z"])))
    db.session.commit()
    db.session.expire_all()
    assert {c.email: c.tags for c in db.session.scalars(sa.select(Contact))} == {
        "c0@x.example": ["a", "b", "z"], "c1@x.example": ["a", "z"], "c2@x.example": ["a", "c", "z"]}
    db.session.execute(sa.update(Contact).values(tags=dialect.tags_without(Contact.tags, ["a", "c"])))
    db.session.commit()
    db.session.expire_all()
    assert {c.email: c.tags for c in db.session.scalars(sa.select(Contact))} == {
        "c0@x.example": ["b", "z"], "c1@x.example": ["z"], "c2@x.example": ["z"]}


def test_removing_a_json_key(app, make_account):
    account, _ = make_account()
    _contacts(account, None)
    db.session.execute(sa.update(Contact).values(custom_fields=dialect.json_remove_key(Contact.custom_fields, "a")))
    db.session.commit()
    db.session.expire_all()
    assert db.session.scalar(sa.select(Contact.custom_fields)) == {"b": 2}


def test_events_for_many_contacts_in_one_statement(app, make_account):
    account, _ = make_account()
    _contacts(account, None, None, None)
    count = events.emit_for_contacts(account.id, "contact.subscribed", sa.select(Contact.id), {"source": "import"})
    db.session.commit()
    assert count == 3
    rows = db.session.scalars(sa.select(EmailEvent)).all()
    assert len({r.id for r in rows}) == 3 and all(r.event_data == {"source": "import"} for r in rows)
    assert {r.contact_id for r in rows} == set(db.session.scalars(sa.select(Contact.id)))


def test_suppress_keeps_the_first_reason(app, make_account):
    account, _ = make_account()
    assert suppressions.suppress(account.id, ["a@x.example", "b@x.example", "a@x.example"], "manual") == 2
    assert suppressions.suppress(account.id, ["a@x.example", "c@x.example"], "hard_bounce") == 1
    db.session.commit()
    reasons = dict(db.session.execute(sa.select(Suppression.email, Suppression.reason)).all())
    assert reasons == {"a@x.example": "manual", "b@x.example": "manual", "c@x.example": "hard_bounce"}
    assert suppressions.is_suppressed(account.id, "c@x.example")
    assert not suppressions.is_suppressed(account.id, "d@x.example")
