"""Planner statistics are refreshed after bulk changes of >= 10 % of a table (issue 14, section 5): proved by
pg_stat_user_tables.last_analyze (set by an explicit ANALYZE only; autovacuum sets last_autoanalyze) and by the
segment count's plan, whose estimate for a new account's tag rows follows the import."""
import io
import json

import pytest
import sqlalchemy as sa

from nudge.extensions import db
from nudge.services import contacts, imports, segments, table_stats

SIDE = ("contacts", "contact_tags", "contact_values", "email_events")


@pytest.fixture
def owner(make_account):
    if db.engine.dialect.name != "postgresql":
        pytest.skip("planner statistics are PostgreSQL's (SQLite has none to refresh)")
    from nudge.services import custom_fields
    _, owner = make_account()
    custom_fields.create_field(owner, name="score", type="number")
    with db.engine.begin() as conn:  # a known starting point: statistics of the (empty) tables
        conn.execute(sa.text("ANALYZE " + ", ".join(sorted(table_stats.TABLES))))
    return owner


def last_analyze():
    """{table: last explicit ANALYZE}, read in a new transaction (statistics views are a per-transaction snapshot)."""
    db.session.commit()
    with db.engine.connect() as conn:
        return dict(conn.execute(sa.text("SELECT relname, last_analyze FROM pg_stat_user_tables")).all())


def analysed_since(before, tables=SIDE):
    after = last_analyze()
    return {table for table in tables if after.get(table) and (before.get(table) is None or after[table] > before[table])}


def csv_of(rows, tags="vip"):
    text = "email,tags,score\n" + "".join(f"user{i}@example{i % 7}.com,{tags},{i}\n" for i in range(rows))
    return io.BytesIO(text.encode())


def import_rows(owner, tmp_path, rows, **options):
    path = tmp_path / "contacts.csv"
    path.write_bytes(csv_of(rows).getvalue())
    return imports.import_file(owner, str(path), **options)


def plan_rows(query, relation):
    """The planner's row estimate for the scans of `relation` in the query's plan."""
    sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
    plan = db.session.execute(sa.text("EXPLAIN (FORMAT JSON) " + sql)).scalar()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    found = []

    def walk(node):
        if node.get("Relation Name") == relation:
            found.append(node["Plan Rows"])
        for child in node.get("Plans", []):
            walk(child)
    walk(plan[0]["Plan"])
    return found


def test_a_large_import_refreshes_the_statistics_before_it_reports_done(owner, tmp_path):
    before = last_analyze()
    imp = import_rows(owner, tmp_path, 1500)
    assert (imp.status, imp.created_count) == ("completed", 1500)
    assert analysed_since(before) == set(SIDE)
    # The first segment count plans with the new account's rows: the tag range is estimated at its real size,
    # not at the handful of rows statistics of the empty table predict (what made nested loops take 40 s).
    query = segments.count_query(owner.account_id, {"match": "all", "conditions": [
        {"field": "tags", "op": "contains_any", "value": ["vip"]}, {"field": "custom.score", "op": "gt", "value": 10}]})
    estimates = plan_rows(query, "contact_tags")
    assert estimates and min(estimates) >= 750, estimates


def test_a_small_change_leaves_statistics_to_autovacuum(owner, tmp_path):
    before = last_analyze()
    import_rows(owner, tmp_path, table_stats.MIN_ROWS - 1)
    assert analysed_since(before) == set()


def test_the_api_batch_import_refreshes_too(owner):
    before = last_analyze()
    imp, errors = imports.import_contacts(owner, [{"email": f"api{i}@example.com"} for i in range(1200)])
    assert (imp.created_count, errors) == (1200, [])
    assert {"contacts", "email_events"} <= analysed_since(before)


def test_bulk_tag_delete_and_restore_of_a_tenth_of_the_table_refresh(owner, tmp_path):
    import_rows(owner, tmp_path, 1200)
    before = last_analyze()
    assert contacts.add_tags(owner, ["new"], filters={}) == 1200
    assert analysed_since(before) == {"contacts", "contact_tags", "email_events"}
    before = last_analyze()
    count, deleted_at = contacts.delete_contacts(owner, filters={})
    assert count == 1200 and analysed_since(before) == set(SIDE)
    before = last_analyze()
    assert contacts.restore_contacts(owner, deleted_at=deleted_at) == 1200
    assert analysed_since(before) == set(SIDE)


def test_bulk_changes_below_a_tenth_of_the_table_do_not(owner, tmp_path):
    import_rows(owner, tmp_path, 1200)
    ids = [str(c.id) for c in db.session.scalars(contacts.contacts_query(owner.account_id).limit(5))]
    before = last_analyze()
    assert contacts.add_tags(owner, ["few"], contact_ids=ids) == 5
    assert analysed_since(before) == set()


def test_static_segment_members_added_in_bulk_refresh(owner, tmp_path):
    import_rows(owner, tmp_path, 1200)
    segment = segments.create_segment(owner, "Everyone picked", type="static")
    ids = [c.id for c in db.session.scalars(contacts.contacts_query(owner.account_id))]
    before = last_analyze()
    assert segments.add_members(owner, segment.id, ids) == 1200
    assert analysed_since(before, ("segment_members",)) == {"segment_members"}


def test_the_refresh_can_be_switched_off(owner, tmp_path, app):
    app.config["ANALYZE_AFTER_BULK_CHANGES"] = False
    before = last_analyze()
    import_rows(owner, tmp_path, 1200)
    assert analysed_since(before) == set()


def test_only_known_tables_and_bulk_changes_count(owner):
    db.session.execute(sa.text("ANALYZE contacts"))
    assert table_stats.stale_tables({"contacts": table_stats.MIN_ROWS}) == ["contacts"]   # analysed empty: 0 rows
    assert table_stats.stale_tables({"contacts": 10, "users; DROP TABLE x": 10**6}) == []


def test_a_new_accounts_import_into_a_big_table_refreshes_an_established_accounts_does_not(owner, make_account,
                                                                                            tmp_path):
    """Below 10 % of the table, an import is still bulk for an account the statistics have not seen (they
    estimate its rows at next to nothing); an account they know gets autovacuum's pace."""
    _, big = make_account()
    db.session.execute(sa.text(
        "INSERT INTO contacts (id, account_id, email, status, custom_fields, created_at, updated_at) "
        "SELECT gen_random_uuid(), :account, 'big' || n || '@example.com', 'active', '{}', now(), now() "
        "FROM generate_series(1, 12000) AS n"), {"account": str(big.account_id)})
    db.session.execute(sa.text("ANALYZE contacts"))
    db.session.commit()
    before = last_analyze()
    import_rows(owner, tmp_path, table_stats.MIN_ROWS)  # 1,000 new rows: 8 % of the table, all of the account
    assert "contacts" in analysed_since(before)
    before = last_analyze()
    path = tmp_path / "more.csv"
    path.write_text("email\n" + "".join(f"more{i}@example.com\n" for i in range(table_stats.MIN_ROWS)))
    imports.import_file(big, str(path))  # the same for an account known at 12,000 rows
    assert "contacts" not in analysed_since(before)
