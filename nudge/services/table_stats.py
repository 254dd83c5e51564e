"""Planner statistics after bulk changes (PostgreSQL).

PostgreSQL plans every query with statistics that ANALYZE collects (row counts, common values, histograms).
Autovacuum refreshes a table's once 10 % of it changed, but only at its next round, a minute or more after the
change's transaction: until then a new account's 50,000 imported contacts are planned as if the tables were
empty, and the first segment count intersecting two tags took 35–40 s instead of 20 ms (nested loops over
contact_tags sized for one row; bench/bench_import_then_count.py). So every bulk path (imports, bulk tag /
delete / restore, suppression lists, static segment members, housekeeping purges, send snapshots) reports the
rows it changed per table, and a table changed by at least BULK_FRACTION of the rows the planner believes it has
-- or the account has in it -- (and by at least MIN_ROWS) is analysed before the operation reports done. SQLite
keeps no such statistics: nothing to do.
"""
import json
import logging
import time

import sqlalchemy as sa
from flask import current_app

from nudge.extensions import db
from nudge.services.dialect import is_postgres

log = logging.getLogger("nudge.table_stats")

BULK_FRACTION = 0.10   # autovacuum's own analyse threshold (autovacuum_analyze_scale_factor)
MIN_ROWS = 1000        # below this a change is not "bulk": no synchronous ANALYZE for a handful of rows

# Only these tables are ever analysed (their names go into the statement; nothing else can).
TABLES = frozenset(("contacts", "contact_tags", "contact_values", "email_events", "suppressions",
                    "segment_members", "messages"))


def contact_changes(rows, *, values=True, events=True):
    """The tables a change of `rows` contacts touches: contacts, the side tables its triggers keep (migration
    0008; a contact has about one row per tag and per custom value, so `rows` is a fair lower bound) and the
    events emitted for them."""
    changes = {"contacts": rows, "contact_tags": rows}
    if values:
        changes["contact_values"] = rows
    if events:
        changes["email_events"] = rows
    return changes


def stale_tables(changes, account_id=None):
    """Tables (sorted) whose change is bulk: >= MIN_ROWS rows and >= BULK_FRACTION of the rows the planner believes
    the table has (pg_class.reltuples: -1 when never analysed, 0 when analysed empty), or of the rows it believes
    the account has there. The second catches a new account's import into a big table: statistics that have not
    seen the account estimate its rows at next to nothing, which is what sends plans into nested loops."""
    candidates = {table: rows for table, rows in changes.items() if table in TABLES and rows and rows >= MIN_ROWS}
    if not candidates:
        return []
    known = dict(db.session.execute(sa.text(
        "SELECT relname, reltuples FROM pg_class WHERE relkind = 'r' AND relnamespace = current_schema()::regnamespace "
        "AND relname IN :names").bindparams(sa.bindparam("names", expanding=True)), {"names": sorted(candidates)}).all())
    stale = []
    for table, rows in sorted(candidates.items()):
        if rows >= BULK_FRACTION * max(known.get(table, -1), 0) or (
                account_id is not None and rows >= BULK_FRACTION * _estimated_account_rows(table, account_id)):
            stale.append(table)
    return stale


def _estimated_account_rows(table, account_id):
    """The planner's estimate of the account's rows in the table (EXPLAIN plans, it does not run the query)."""
    plan = db.session.execute(sa.text(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {table} WHERE account_id = :account"),
                              {"account": str(account_id)}).scalar()
    plan = plan if isinstance(plan, list) else json.loads(plan)
    return plan[0]["Plan"]["Plan Rows"]


def refresh_after_bulk_change(changes, account_id=None):
    """ANALYZE the tables a bulk change made stale ({table: rows changed}; account_id: whose rows changed), in the
    caller's transaction (the caller commits). Returns the tables analysed."""
    if not is_postgres() or not current_app.config.get("ANALYZE_AFTER_BULK_CHANGES", True):
        return []
    tables = stale_tables(changes, account_id)
    if tables:
        start = time.perf_counter()
        db.session.execute(sa.text("ANALYZE " + ", ".join(tables)))
        log.info("statistics refreshed after a bulk change in %.2f s: %s", time.perf_counter() - start,
                 ", ".join(f"{table} ({changes[table]:,} rows)" for table in tables))
    return tables
