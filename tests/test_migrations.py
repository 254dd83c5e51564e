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
