"""The first segment counts right after a large import into a new account (PostgreSQL).

    .venv/bin/python bench/bench_import_then_count.py                       # default database below
    .venv/bin/python bench/bench_import_then_count.py postgresql://postgres@127.0.0.1:5432/nudge_bench
    BENCH_DATABASE_URL=postgresql://... .venv/bin/python bench/bench_import_then_count.py --rows 100000
    .venv/bin/python bench/bench_import_then_count.py --without-analyze     # the behaviour before issue 14

The database's schema is dropped and rebuilt with the real migrations (so the tables start empty, as on a new
install; --keep imports next to what is there instead), an account is created with three custom fields, and
a generated CSV of --rows contacts (email, names, tags, a choice, a number and a text field) is imported through
services.imports.import_file (the code path of `nudge import-contacts` and of the dashboard's worker). Then each
segment below is counted once, as a user opening the segment builder would, through segments.count_matching.

Printed: the import's time, whether the import refreshed the planner statistics (pg_stat_user_tables), and
each first count's time. --without-analyze turns the refresh off (ANALYZE_AFTER_BULK_CHANGES = False): what
happened before, when the first counts planned with the statistics of the empty tables.
"""
import argparse
import csv
import os
import random
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test_e"
TAGS = ["customer", "newsletter", "vip", "lead", "webinar", "trial", "partner", "press"]
FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Inès", "Jonas", "Kemal", "Lena"]
LAST = ["Lee", "Müller", "Okafor", "Rossi", "Smith", "Tanaka", "Nguyen", "García", "Kowalski", "Dubois"]
PLANS = ["Free", "Pro", "Team"]

SEGMENTS = [
    ("everyone (not deleted)", {"match": "all", "conditions": []}),
    ("tag vip", {"field": "tags", "op": "contains_any", "value": ["vip"]}),
    ("tags vip and lead", {"field": "tags", "op": "contains_all", "value": ["vip", "lead"]}),
    ("plan is Pro", {"field": "custom.plan", "op": "eq", "value": "Pro"}),
    ("score > 900", {"field": "custom.score", "op": "gt", "value": 900}),
    ("first name Ann", {"field": "first_name", "op": "eq", "value": "ann"}),
    ("domain @example7.com", {"field": "email", "op": "ends_with", "value": "@example7.com"}),
    ("tag vip and plan Pro", {"match": "all", "conditions": [
        {"field": "tags", "op": "contains_any", "value": ["vip"]}, {"field": "custom.plan", "op": "eq", "value": "Pro"}]}),
    ("tag trial or score < 100", {"match": "any", "conditions": [
        {"field": "tags", "op": "contains_any", "value": ["trial"]}, {"field": "custom.score", "op": "lt", "value": 100}]}),
    ("subscribed (not opened within 30 days)", {"event": "opened", "op": "has_not", "within_days": 30}),
]


def generate(path, rows, seed=14):
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "last_name", "tags", "plan", "score", "company"])
        for i in range(rows):
            writer.writerow([f"user{i}.{rng.randrange(10**6)}@example{i % 97}.com", rng.choice(FIRST), rng.choice(LAST),
                             ";".join(rng.sample(TAGS, rng.randint(0, 3))), rng.choice(PLANS), rng.randint(0, 1000),
                             f"Company {i % 5000}"])


def make_app(url, analyze):
    os.environ.setdefault("NUDGE_INSTANCE_PATH", tempfile.mkdtemp(prefix="nudge-bench-count-"))
    os.environ.pop("NUDGE_REDIS_URL", None)
    from nudge import create_app
    from nudge.config import normalize_database_url
    return create_app({"SQLALCHEMY_DATABASE_URI": normalize_database_url(url), "ANALYZE_AFTER_BULK_CHANGES": analyze})


def rebuild_schema():
    import sqlalchemy as sa
    from flask_migrate import upgrade

    from nudge.extensions import db
    with db.engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    upgrade()


def analyzed_tables():
    import sqlalchemy as sa

    from nudge.extensions import db
    return db.session.execute(sa.text(
        "SELECT relname, last_analyze IS NOT NULL, n_mod_since_analyze FROM pg_stat_user_tables "
        "WHERE relname IN ('contacts', 'contact_tags', 'contact_values', 'email_events') ORDER BY relname")).all()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("database_url", nargs="?", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--keep", action="store_true", help="keep the database's data (default: rebuild the schema)")
    parser.add_argument("--without-analyze", action="store_true", help="no statistics refresh after the import")
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        raise SystemExit("PostgreSQL only: SQLite has no planner statistics to go stale.")

    from nudge.extensions import db
    from nudge.services import accounts, custom_fields, imports, segments
    app = make_app(args.database_url, analyze=not args.without_analyze)
    with app.app_context(), tempfile.TemporaryDirectory() as folder:
        if not args.keep:
            rebuild_schema()
        path = os.path.join(folder, "contacts.csv")
        generate(path, args.rows)
        suffix = random.randrange(10**9)
        _, owner = accounts.create_account(name="Bench", email=f"bench{suffix}@example.com",
                                           password="Bench-Password-42!", plan="enterprise")
        custom_fields.create_field(owner, name="plan", type="choice", options=PLANS)
        custom_fields.create_field(owner, name="score", type="number")
        custom_fields.create_field(owner, name="company")

        start = time.perf_counter()
        imp = imports.import_file(owner, path)
        seconds = time.perf_counter() - start
        print(f"Import of {args.rows:,} contacts into a new account: {seconds:.1f} s "
              f"({imp.created_count:,} created, {imp.error_count:,} errors; "
              f"statistics refresh {'off' if args.without_analyze else 'on'})")
        for table, analyzed, modified in analyzed_tables():
            print(f"  {table:15} analysed: {'yes' if analyzed else 'no '}  rows changed since: {modified:,}")
        print(f"\nFirst count of each segment:\n{'segment':42} {'matches':>8} {'seconds':>8}")
        slowest = 0.0
        for label, condition in SEGMENTS:
            conditions = condition if "match" in condition else {"match": "all", "conditions": [condition]}
            start = time.perf_counter()
            count = segments.count_matching(owner.account_id, conditions)
            elapsed = time.perf_counter() - start
            db.session.rollback()
            slowest = max(slowest, elapsed)
            print(f"{label:42} {count:>8,} {elapsed:>8.3f}", flush=True)
        print(f"\nSlowest first count: {slowest:.3f} s ({'under' if slowest < 1 else 'OVER'} the 1 s target)")


if __name__ == "__main__":
    main()
