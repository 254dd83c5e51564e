"""Segment count latency on PostgreSQL: 1,000,000 contacts and 10,000,000 email events in one account.

    .venv/bin/python bench/segments.py                 # generate once (kept), then measure
    .venv/bin/python bench/segments.py --regenerate    # drop and rebuild the database first
    .venv/bin/python bench/segments.py --explain       # also print EXPLAIN (ANALYZE, BUFFERS) per query

Builds the database `nudge_bench_segments` with the real migrations, fills it set-based with
generate_series (one INSERT ... SELECT per table; no rows pass through Python; the load bypasses the
triggers on contacts, so contact_tags and contact_values are then rebuilt set-based), runs VACUUM ANALYZE,
then runs each segment count 20 times through the service (segments.count_matching: validation,
compilation and the one SQL query) and prints p50/p95 per query. An existing database is migrated to head
first (and vacuumed when a migration ran). Four other accounts hold 200,000
contacts and 1,000,000 events so tenant filtering matters.

Targets (issue 3): p95 < 200 ms for field, tag and custom-field conditions, < 1 s for engagement.
"""
import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DATABASE = "nudge_bench_segments"
SERVER = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
CONTACTS = 1_000_000
EVENTS = 10_000_000
OTHER_ACCOUNTS = 4
OTHER_CONTACTS = 50_000     # per other account
OTHER_EVENTS = 250_000      # per other account
RUNS = 20
TAGS = [f"tag{n:02d}" for n in range(20)]
DOMAINS = ["gmail.com", "yahoo.com", "example.com", "outlook.com", "acme.io"]
FIRST_NAMES = ["Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus", "Hal", "Ivy", "Joe"]


def percentile(values, pct):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(pct / 100 * (len(values) - 1))))]


def admin_sql(statement):
    import psycopg2
    conn = psycopg2.connect(SERVER + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def database_exists():
    import psycopg2
    conn = psycopg2.connect(SERVER + "/postgres")
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
        found = cur.fetchone() is not None
    conn.close()
    return found


def make_app():
    os.environ.setdefault("NUDGE_INSTANCE_PATH", "/tmp/nudge-bench-segments")
    os.environ["NUDGE_DATABASE_URL"] = f"{SERVER}/{DATABASE}"
    from nudge import create_app
    from nudge.config import normalize_database_url
    return create_app({"SQLALCHEMY_DATABASE_URI": normalize_database_url(f"{SERVER}/{DATABASE}")})


def step(label, statement, conn):
    import sqlalchemy as sa
    start = time.perf_counter()
    conn.execute(sa.text(statement))
    print(f"  {label}: {time.perf_counter() - start:.1f} s", flush=True)


def generate(app):
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from nudge.extensions import db
    from nudge.services import accounts
    from nudge.services import custom_fields
    from nudge.services import segment_tables
    with app.app_context():
        upgrade()
        main, owner = accounts.create_account(name="Bench shop", email="owner@bench.example",
                                              password="Bench-Password-42!", plan="enterprise", owner_name="Owner")
        main.timezone = "Europe/Berlin"
        db.session.commit()
        for name, type_, options in (("score", "number", None), ("plan", "choice", ["Free", "Pro", "Team"]),
                                     ("company", "text", None), ("renewal", "date", None)):
            custom_fields.create_field(owner, name=name, type=type_, options=options)
        others = [accounts.create_account(name=f"Other {n}", email=f"owner@other{n}.example",
                                          password="Bench-Password-42!", plan="starter", owner_name="Owner")[0]
                  for n in range(OTHER_ACCOUNTS)]
        account_ids = [str(main.id)] + [str(a.id) for a in others]
        db.session.commit()
        domains = "ARRAY[" + ",".join(f"'{d}'" for d in DOMAINS) + "]"
        names = "ARRAY[" + ",".join(f"'{n}'" for n in FIRST_NAMES) + "]"
        print("Generating (set-based):", flush=True)
        with db.engine.begin() as conn:
            conn.execute(sa.text("SET maintenance_work_mem = '512MB'"))
            # Bulk-load like a restore: no foreign-key triggers, secondary indexes built once at the end.
            conn.execute(sa.text("SET session_replication_role = replica"))
            saved = conn.execute(sa.text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename IN ('contacts', 'email_events') "
                "AND indexname NOT IN (SELECT conname FROM pg_constraint)")).all()
            for name, _ in saved:
                conn.execute(sa.text(f"DROP INDEX {name}"))
            # Campaigns: 50 in the main account.
            step("campaigns", f"""
                INSERT INTO campaigns (id, account_id, name, status, stats, created_at, updated_at)
                SELECT md5('camp' || k)::uuid, '{account_ids[0]}', 'Campaign ' || k, 'sent', '{{}}', now(), now()
                FROM generate_series(1, 50) AS k""", conn)
            for index, account_id in enumerate(account_ids):
                count = CONTACTS if index == 0 else OTHER_CONTACTS
                step(f"contacts of account {index} ({count:,})", f"""
                    INSERT INTO contacts (id, account_id, email, first_name, last_name, status, subscription_date,
                                          custom_fields, tags, source, created_at, updated_at)
                    SELECT md5('c{index}-' || i)::uuid, '{account_id}',
                           'user' || i || '@' || ({domains})[1 + (hashint % 5)],
                           ({names})[1 + (hashint / 5 % 10)], 'Last' || (i % 1000),
                           CASE WHEN hashint % 100 < 90 THEN 'active' WHEN hashint % 100 < 95 THEN 'unsubscribed'
                                WHEN hashint % 100 < 98 THEN 'bounced' ELSE 'deleted' END,
                           now() - make_interval(days => (hashint % 1000)),
                           jsonb_build_object('score', hashint % 1000,
                                              'plan', (ARRAY['Free','Pro','Team'])[1 + (hashint / 7 % 3)],
                                              'company', 'Company ' || (hashint % 5000),
                                              'renewal', to_char(date '2024-01-01' + (hashint % 730), 'YYYY-MM-DD'))
                             - CASE WHEN hashint % 10 = 0 THEN 'score' ELSE '' END,
                           CASE WHEN hashint % 4 = 0 THEN NULL ELSE
                             ARRAY(SELECT 'tag' || lpad(((hashint / (t * 20 + 1)) % 20)::text, 2, '0')
                                   FROM generate_series(0, hashint % 4) AS t GROUP BY 1) END,
                           'import', now() - make_interval(days => (hashint % 1000), secs => (hashint % 86400)),
                           now()
                    FROM (SELECT i, abs(hashtext('h' || i)) AS hashint FROM generate_series(1, {count}) AS i) AS s""",
                     conn)
            for index, account_id in enumerate(account_ids):
                count = EVENTS if index == 0 else OTHER_EVENTS
                contacts = CONTACTS if index == 0 else OTHER_CONTACTS
                step(f"email_events of account {index} ({count:,})", f"""
                    INSERT INTO email_events (id, account_id, campaign_id, contact_id, event_type, event_data,
                                              created_at)
                    SELECT gen_random_uuid(), '{account_id}',
                           CASE WHEN kind < 99 AND {index} = 0 THEN md5('camp' || (1 + e % 50))::uuid END,
                           md5('c{index}-' || (1 + (abs(hashtext('e' || e)) % {contacts})))::uuid,
                           CASE WHEN kind < 50 THEN 'email.sent' WHEN kind < 64 THEN 'email.delivered'
                                WHEN kind < 89 THEN 'email.opened' WHEN kind < 97 THEN 'email.clicked'
                                WHEN kind < 99 THEN 'email.bounced' ELSE 'contact.unsubscribed' END,
                           '{{}}', now() - make_interval(secs => (abs(hashtext('t' || e)) % (365 * 86400)))
                    FROM (SELECT e, abs(hashtext('k' || e)) % 100 AS kind FROM generate_series(1, {count}) AS e) AS s""",
                     conn)
            for name, definition in saved:
                step(f"index {name}", definition, conn)
            conn.execute(sa.text("SET session_replication_role = DEFAULT"))
        # The load bypassed the triggers on contacts (replica role): fill contact_tags / contact_values.
        start = time.perf_counter()
        for account_id in account_ids:
            segment_tables.rebuild(account_id)
        db.session.commit()
        print(f"  contact_tags and contact_values: {time.perf_counter() - start:.1f} s", flush=True)
        vacuum()
        return account_ids[0]


def vacuum():
    """VACUUM ANALYZE: statistics, and the visibility map that lets index-only scans skip the tables."""
    from nudge.extensions import db
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        step("VACUUM ANALYZE", "VACUUM ANALYZE", conn)


QUERIES = [
    ("field", "email eq (one address)", {"field": "email", "op": "eq", "value": "__email__"}),
    ("field", "email starts_with", {"field": "email", "op": "starts_with", "value": "user12345"}),
    ("field", "email ends_with @acme.io (domain, 20%)", {"field": "email", "op": "ends_with", "value": "@acme.io"}),
    ("field", "first_name eq", {"field": "first_name", "op": "eq", "value": "ann"}),
    ("field", "last_name eq", {"field": "last_name", "op": "eq", "value": "LAST42"}),
    ("tag", "tags contains_any [2]", {"field": "tags", "op": "contains_any", "value": ["tag03", "tag07"]}),
    ("tag", "tags contains_all [2]", {"field": "tags", "op": "contains_all", "value": ["tag00", "tag01"]}),
    ("tag", "tags contains_none [1]", {"field": "tags", "op": "contains_none", "value": ["tag00"]}),
    ("custom", "custom number gt", {"field": "custom.score", "op": "gt", "value": 900}),
    ("custom", "custom choice eq", {"field": "custom.plan", "op": "eq", "value": "Pro"}),
    ("custom", "custom text eq (one company)", {"field": "custom.company", "op": "eq", "value": "company 42"}),
    ("custom", "custom date before", {"field": "custom.renewal", "op": "before", "value": "2024-03-01"}),
    ("field", "created_at within_days 30", {"field": "created_at", "op": "within_days", "value": 30}),
    ("field", "created_at within_days 365", {"field": "created_at", "op": "within_days", "value": 365}),
    ("field", "subscription_date within_days 30", {"field": "subscription_date", "op": "within_days", "value": 30}),
    ("field", "first_name eq and custom choice eq", {"match": "all", "conditions": [
        {"field": "first_name", "op": "eq", "value": "ann"}, {"field": "custom.plan", "op": "eq", "value": "Pro"}]}),
    ("field", "nested any/all", {"match": "any", "conditions": [
        {"match": "all", "conditions": [{"field": "tags", "op": "contains_any", "value": ["tag05"]},
                                        {"field": "custom.plan", "op": "eq", "value": "Team"}]},
        {"match": "all", "conditions": [{"field": "email", "op": "ends_with", "value": "@gmail.com"},
                                        {"field": "status", "op": "eq", "value": "unsubscribed"}]}]}),
    ("engagement", "opened within 30 days", {"event": "opened", "op": "has", "within_days": 30}),
    ("engagement", "has_not opened within 30 days", {"event": "opened", "op": "has_not", "within_days": 30}),
    ("engagement", "clicked campaign 7", {"event": "clicked", "op": "has", "campaign_id": "__campaign__"}),
    ("engagement", "opened ever, and tag", {"match": "all", "conditions": [
        {"event": "opened", "op": "has"}, {"field": "tags", "op": "contains_any", "value": ["tag01"]}]}),
]
TARGETS = {"field": 0.2, "tag": 0.2, "custom": 0.2, "engagement": 1.0}


def measure(app, explain=False):
    import uuid

    import sqlalchemy as sa

    from nudge.extensions import db
    from nudge.models import Account, Contact
    from nudge.services import segments
    with app.app_context():
        account_id = db.session.scalar(sa.select(Account.id).where(Account.email == "owner@bench.example"))
        campaign = str(uuid.UUID(__import__("hashlib").md5(b"camp7").hexdigest()))
        email = db.session.scalar(sa.select(Contact.email).where(Contact.account_id == account_id,
                                                                 Contact.email.like("user500000@%")))
        total = db.session.scalar(sa.select(sa.func.count()).select_from(Contact))
        print(f"\n{total:,} contacts in the database; counting in one account, {RUNS} runs each:\n")
        print(f"{'query':45} {'matches':>9} {'p50 ms':>8} {'p95 ms':>8}  target")
        worst = True
        for kind, label, condition in QUERIES:
            condition = eval(repr(condition).replace("__campaign__", campaign)  # noqa: S307 - our own literal
                             .replace("__email__", email.upper()))
            conditions = condition if "match" in condition else {"match": "all", "conditions": [condition]}
            times, count = [], None
            segments.count_matching(account_id, conditions)  # warm the cache once, as a live builder would
            for _ in range(RUNS):
                start = time.perf_counter()
                count = segments.count_matching(account_id, conditions)
                times.append(time.perf_counter() - start)
                db.session.rollback()
            p50, p95 = statistics.median(times), percentile(times, 95)
            ok = p95 < TARGETS[kind]
            worst = worst and ok
            print(f"{label:45} {count:>9,} {p50 * 1000:>8.1f} {p95 * 1000:>8.1f}  "
                  f"{'ok' if ok else 'MISSED'} (< {TARGETS[kind] * 1000:.0f} ms)", flush=True)
            if explain:
                query = segments.count_query(account_id, conditions)
                sql = str(query.compile(db.engine, compile_kwargs={"literal_binds": True}))
                plan = db.session.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql)).scalars().all()
                print("    " + "\n    ".join(plan) + "\n")
        print("\nAll targets met." if worst else "\nSome targets missed.")


def main():
    import sqlalchemy as sa
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regenerate", action="store_true", help="drop and rebuild the bench database")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE for each query")
    parser.add_argument("--measure-only", action="store_true", help="skip generation even if the db is missing")
    args = parser.parse_args()
    if args.regenerate and database_exists():
        admin_sql(f"DROP DATABASE {DATABASE}")
    fresh = not database_exists()
    if fresh:
        admin_sql(f"CREATE DATABASE {DATABASE}")
    app = make_app()
    if fresh:
        start = time.perf_counter()
        generate(app)
        print(f"Generated in {time.perf_counter() - start:.0f} s", flush=True)
    else:
        from flask_migrate import upgrade

        from nudge.extensions import db
        with app.app_context():
            with db.engine.connect() as conn:
                before = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            start = time.perf_counter()
            upgrade()  # new migrations since the data was generated
            with db.engine.connect() as conn:
                after = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            if after != before:
                print(f"Migrated {before} -> {after} in {time.perf_counter() - start:.1f} s", flush=True)
                vacuum()
    measure(app, explain=args.explain)


if __name__ == "__main__":
    main()
