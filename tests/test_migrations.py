"""The migrations build exactly the schema the models describe, on the dialect under test."""
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import current_app

from nudge.extensions import db


def _include_object(obj, name, type_, reflected, compare_to):
    if type_ == "table" and reflected and compare_to is None:
        return name in db.metadata.tables
    return True


def test_autogenerate_finds_no_difference_between_models_and_migrated_schema(app):
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": _include_object})
        diff = compare_metadata(context, db.metadata)
    assert diff == [], f"models and migrations disagree on {db.engine.dialect.name}: {diff}"


def test_the_database_is_at_the_single_head_revision(app):
    config = current_app.extensions["migrate"].migrate.get_config()
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1
    with db.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == heads[0]


def test_postgresql_gets_native_types(app):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL types are checked in the PostgreSQL pass of the suite")
    columns = {c["name"]: c["type"] for c in sa.inspect(db.engine).get_columns("contacts")}
    assert str(columns["id"]) == "UUID"
    assert str(columns["custom_fields"]) == "JSONB"
    assert isinstance(columns["tags"], sa.ARRAY) and isinstance(columns["tags"].item_type, sa.Text)
    events = {c["name"]: str(c["type"]) for c in sa.inspect(db.engine).get_columns("email_events")}
    assert events["ip_address"] == "INET"
    indexes = {i["name"]: i for i in sa.inspect(db.engine).get_indexes("contacts")}
    assert indexes["idx_contacts_tags"]["dialect_options"].get("postgresql_using") == "gin"


def test_postgresql_events_contact_index_answers_engagement_rules_alone(app):
    """Segment rules like "opened, and tag X" look up each contact's events by this index without reading
    the table (migration 0010): it must carry the event's type and account."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("INCLUDE columns exist on PostgreSQL only")
    indexes = {i["name"]: i for i in sa.inspect(db.engine).get_indexes("email_events")}
    contact = indexes["idx_email_events_contact"]
    assert contact["column_names"] == ["contact_id", "created_at"]
    assert contact["dialect_options"]["postgresql_include"] == ["event_type", "account_id"]


def test_postgresql_campaign_index_holds_campaign_events_only(app):
    """Contact events (an import writes one per contact) have no campaign and no entry in the campaign index
    (migration 0011); every query by campaign still can use it."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the predicate is reflected on PostgreSQL")
    indexes = {i["name"]: i for i in sa.inspect(db.engine).get_indexes("email_events")}
    campaign = indexes["idx_email_events_campaign"]
    assert campaign["column_names"] == ["campaign_id", "event_type"]
    assert campaign["dialect_options"]["postgresql_where"] == "(campaign_id IS NOT NULL)"


def _migration(filename):
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations", "versions", filename)
    spec = importlib.util.spec_from_file_location(filename[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sent_campaigns_tracked_links_become_urls(app, make_account):
    """Migration 0013: links stored as their HTML spelling (&amp;) are stored as the URLs they stand for, in
    the same order (the emails' click URLs carry each link's index)."""
    from alembic.operations import Operations

    from nudge.models import Campaign
    account, _ = make_account()
    written = ["https://shop.example/?a=1&amp;b=2&#38;c=3", "https://shop.example/plain"]
    campaign = Campaign(account_id=account.id, name="Sent before", links=written)
    untouched = Campaign(account_id=account.id, name="Draft")
    db.session.add_all([campaign, untouched])
    db.session.commit()

    with db.engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        _migration("0013_campaign_links_unescaped.py").upgrade()

    db.session.expire_all()
    assert db.session.get(Campaign, campaign.id).links == ["https://shop.example/?a=1&b=2&c=3",
                                                             "https://shop.example/plain"]
    assert db.session.get(Campaign, untouched.id).links is None


def test_expression_indexes_match_the_models_on_sqlite(app):
    """Autogenerate cannot compare expression indexes on SQLite (it skips them): compare their DDL instead, so
    the unique (account_id, lower(email)) indexes of migration 0016 are checked on both databases."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL expression indexes are compared by autogenerate")
    from sqlalchemy.schema import CreateIndex

    def normal(sql):
        return " ".join(sql.replace("\n", " ").split()).replace("( ", "(").replace(" )", ")")

    with db.engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'index'")).all())
    expected = {}
    for table in db.metadata.sorted_tables:
        for index in table.indexes:
            ddl_if = getattr(index, "_ddl_if", None)
            if ddl_if is not None and ddl_if.dialect not in (None, "sqlite"):
                continue
            if any(not isinstance(e, sa.Column) for e in index.expressions):
                expected[index.name] = normal(str(CreateIndex(index).compile(dialect=db.engine.dialect)))
    assert {"uq_contacts_account_lower_email", "uq_suppressions_account_lower_email"} <= set(expected)
    assert {name: normal(stored.get(name) or "") for name in expected} == expected


def test_contacts_differing_only_in_case_are_merged(app, make_account, caplog):
    """Migration 0016: duplicates made at 0015 (same address in another case) become the oldest contact, with
    the group's fields, its most restrictive status and every dependant; suppressions merge too; a report is
    logged; afterwards the database refuses a new duplicate."""
    import datetime as dt
    import logging
    import types

    from alembic.operations import Operations

    from nudge.models import (Campaign, Contact, ContactTag, ContactValue, EmailEvent, Message, Segment,
                              SegmentMember, Suppression)
    from nudge.models.types import new_id, utcnow
    from nudge.services import custom_fields

    account, owner = make_account()
    other, _ = make_account()
    account, other = (types.SimpleNamespace(id=a.id) for a in (account, other))  # they outlive the session
    custom_fields.create_field(owner, name="plan")
    custom_fields.create_field(owner, name="seats", type="number")
    custom_fields.create_field(owner, name="vip", type="boolean")
    db.session.commit()
    db.session.close()
    migration = _migration("0016_contact_email_identity.py")
    with db.engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        migration.downgrade()

    t0 = utcnow() - dt.timedelta(days=3)
    oldest = Contact(id=new_id(), account_id=account.id, email="Ann@Example.com", last_name="Lee", tags=["a", "b"],
                     custom_fields={"plan": "pro"}, status="active", created_at=t0)
    unsubscribed = Contact(id=new_id(), account_id=account.id, email="ann@example.com", first_name="Ann",
                           tags=["b", "c"], custom_fields={"plan": "free", "seats": 3, "vip": True},
                           status="unsubscribed", unsubscribed_at=t0, created_at=t0 + dt.timedelta(hours=1))
    deleted = Contact(id=new_id(), account_id=account.id, email="ANN@EXAMPLE.COM", status="deleted",
                      status_before_delete="bounced", deleted_at=t0, created_at=t0 + dt.timedelta(hours=2))
    bob = Contact(id=new_id(), account_id=account.id, email="bob@example.com", created_at=t0)
    gone = [Contact(id=new_id(), account_id=other.id, email=email, status="deleted", status_before_delete="active",
                    deleted_at=t0 + dt.timedelta(hours=n), created_at=t0 + dt.timedelta(hours=n))
            for n, email in enumerate(["carl@example.com", "Carl@example.com"])]
    db.session.add_all([oldest, unsubscribed, deleted, bob, *gone])
    both = Campaign(id=new_id(), account_id=account.id, name="Mailed two spellings")
    once = Campaign(id=new_id(), account_id=account.id, name="Mailed the deleted one")
    picked = Segment(id=new_id(), account_id=account.id, name="Picked", type="static", conditions={})
    later = Segment(id=new_id(), account_id=account.id, name="Later", type="static", conditions={})
    db.session.add_all([both, once, picked, later])
    db.session.flush()
    messages = {(both.id, oldest.id): new_id(), (both.id, unsubscribed.id): new_id(), (once.id, deleted.id): new_id()}
    db.session.add_all([Message(id=message_id, account_id=account.id, campaign_id=campaign_id, contact_id=contact_id,
                                email="ann@example.com") for (campaign_id, contact_id), message_id in messages.items()])
    db.session.add_all([EmailEvent(id=new_id(), account_id=account.id, contact_id=c.id, event_type="email.opened")
                        for c in (oldest, unsubscribed, deleted)])
    db.session.add_all([SegmentMember(segment_id=picked.id, contact_id=oldest.id, account_id=account.id),
                        SegmentMember(segment_id=picked.id, contact_id=unsubscribed.id, account_id=account.id),
                        SegmentMember(segment_id=later.id, contact_id=deleted.id, account_id=account.id)])
    first_suppression = Suppression(id=new_id(), account_id=account.id, email="ann@example.com",
                                    reason="unsubscribed", created_at=t0)
    db.session.add_all([first_suppression,
                        Suppression(id=new_id(), account_id=account.id, email="ANN@example.com",
                                    reason="hard_bounce", created_at=t0 + dt.timedelta(hours=1))])
    db.session.commit()
    ids = {c.id for c in (oldest, unsubscribed, deleted)}
    oldest, unsubscribed, deleted, bob, gone, both, once, picked, later, first_suppression = (
        types.SimpleNamespace(id=o.id) if not isinstance(o, list) else [types.SimpleNamespace(id=g.id) for g in o]
        for o in (oldest, unsubscribed, deleted, bob, gone, both, once, picked, later, first_suppression))
    db.session.close()

    caplog.set_level(logging.INFO, logger="alembic.runtime.migration")
    with db.engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        migration.upgrade()

    merged = db.session.get(Contact, oldest.id)
    assert db.session.scalars(sa.select(Contact.id).where(Contact.account_id == account.id)).all() \
        and {c.id for c in db.session.scalars(sa.select(Contact).where(Contact.account_id == account.id))} \
        == {oldest.id, bob.id}
    assert (merged.email, merged.first_name, merged.last_name) == ("Ann@Example.com", "Ann", "Lee")
    assert merged.tags == ["a", "b", "c"]
    assert merged.custom_fields == {"plan": "pro", "seats": 3, "vip": True}
    # A duplicate that unsubscribed, or bounced before it was deleted, keeps the merged contact from being mailed.
    assert (merged.status, merged.deleted_at, merged.status_before_delete) == ("bounced", None, None)
    assert set(db.session.scalars(sa.select(EmailEvent.contact_id).where(EmailEvent.account_id == account.id))) \
        == {oldest.id}
    links = dict(db.session.execute(sa.select(Message.id, Message.contact_id)).all())
    assert links[messages[(both.id, oldest.id)]] == oldest.id
    assert links[messages[(both.id, unsubscribed.id)]] is None  # kept in the report, one per (campaign, contact)
    assert links[messages[(once.id, deleted.id)]] == oldest.id
    assert sorted(db.session.execute(sa.select(SegmentMember.segment_id, SegmentMember.contact_id)).all()) \
        == sorted([(picked.id, oldest.id), (later.id, oldest.id)])
    assert set(db.session.execute(sa.select(ContactTag.tag, ContactTag.contact_id)
                                  .where(ContactTag.account_id == account.id)).all()) \
        == {("a", oldest.id), ("b", oldest.id), ("c", oldest.id)}
    assert set(db.session.scalars(sa.select(ContactValue.contact_id).where(ContactValue.account_id == account.id))) \
        == {oldest.id}
    [carl] = db.session.scalars(sa.select(Contact).where(Contact.account_id == other.id)).all()
    assert (carl.id, carl.status, carl.status_before_delete) == (gone[0].id, "deleted", "active")
    assert db.session.scalars(sa.select(Suppression.id).where(Suppression.account_id == account.id)).all() \
        == [first_suppression.id]
    report = caplog.text
    assert f"account {account.id}: 2 contacts merged into 1" in report
    assert f"account {other.id}: 1 contacts merged into 1" in report
    assert f"kept contact {oldest.id}, merged {unsubscribed.id}, {deleted.id}" in report
    assert ids - {oldest.id} and not db.session.scalars(sa.select(Contact.id).where(Contact.id.in_(ids - {oldest.id}))).all()

    db.session.add(Contact(account_id=account.id, email="BOB@example.com"))
    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()
    db.session.rollback()
