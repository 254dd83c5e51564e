"""Contact import speed and memory: a generated 1,000,000-row CSV into PostgreSQL and SQLite.

    .venv/bin/python bench/import_contacts.py                 # both dialects, 1,000,000 rows
    .venv/bin/python bench/import_contacts.py --rows 200000 --sqlite-only
    .venv/bin/python bench/import_contacts.py --postgres-url postgresql://postgres@127.0.0.1:5432/nudge_bench_import
    .venv/bin/python bench/import_contacts.py --without-side-tables   # for comparison: no contact_tags/_values
    .venv/bin/python bench/import_contacts.py --postgres-only --writers 3   # IMPORT_WRITERS for this run

The file has email, first_name, last_name, tags ("a;b"), company (text) and score (number) columns.
Each import runs in a fresh child process on a fresh database migrated to head (so every index of the
schema is in place: the spec's unique (account_id, email), idx_contacts_account_email, the GIN index on
tags, ...), through the same code path as `nudge import-contacts` (services.imports.import_file).
It prints rows/minute for the first import (all rows created) and for a re-run of the same file with
update_existing (nothing differs: all rows skipped), and the child's peak RSS (VmHWM).
Targets (issue 3): >= 1,000,000 rows/min on PostgreSQL, >= 300,000/min on SQLite, peak RSS < 300 MB.
"""
import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/nudge_bench_import"
TAGS = ["customer", "newsletter", "vip", "lead", "webinar", "trial", "partner", "press"]
FIRST = ["Ann", "Bob", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Inès", "Jonas", "Kemal", "Lena"]
LAST = ["Lee", "Müller", "Okafor", "Rossi", "Smith", "Tanaka", "Nguyen", "García", "Kowalski", "Dubois"]


def generate(path, rows, seed=1):
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "first_name", "last_name", "tags", "company", "score"])
        for i in range(rows):
            writer.writerow([f"user{i}.{rng.randrange(10**6)}@example{i % 97}.com", rng.choice(FIRST), rng.choice(LAST),
                             ";".join(rng.sample(TAGS, rng.randint(0, 3))), f"Company {i % 5000}", rng.randint(0, 1000)])


def peak_rss_mb():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_postgres(url):
    import sqlalchemy as sa

    from nudge.config import normalize_database_url
    base, name = normalize_database_url(url).rsplit("/", 1)
    engine = sa.create_engine(base + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()


def child(path):
    """Runs in a fresh process: migrate, create an account, import the file twice, print JSON."""
    from flask_migrate import upgrade

    from nudge import create_app
    from nudge.services import accounts, custom_fields, imports

    writers = os.environ.get("BENCH_IMPORT_WRITERS")
    overrides = {"IMPORT_WRITERS": int(writers)} if writers else None
    app = create_app(overrides)  # NUDGE_DATABASE_URL from the environment
    with app.app_context():
        upgrade()
        if os.environ.get("BENCH_WITHOUT_SIDE_TABLES"):
            drop_side_table_triggers()
        _, owner = accounts.create_account(name="Bench", email="bench@example.com", password="Bench-Password-42!",
                                           plan="enterprise")
        custom_fields.create_field(owner, name="company")
        custom_fields.create_field(owner, name="score", type="number")
        results = {}
        for label, update in (("first", False), ("rerun", True)):
            start = time.perf_counter()
            imp = imports.import_file(owner, path, update_existing=update)
            seconds = time.perf_counter() - start
            results[label] = {"seconds": round(seconds, 2), "rows_per_min": round(imp.processed_rows / seconds * 60),
                              "created": imp.created_count, "updated": imp.updated_count,
                              "skipped": imp.skipped_count, "errors": imp.error_count, "status": imp.status}
        results["peak_rss_mb"] = round(peak_rss_mb(), 1)
        if database_is_postgres():
            results["baseline_copy_rows_per_min"] = baseline_copy(owner.account_id)
    print(json.dumps(results))


SIDE_TABLE_TRIGGERS = ("contacts_segment_rows_insert", "contacts_segment_rows_update", "contacts_segment_rows_delete")


def drop_side_table_triggers():
    """For comparison only: the import without contact_tags / contact_values kept in step (migration 0008)."""
    import sqlalchemy as sa

    from nudge.extensions import db
    for name in SIDE_TABLE_TRIGGERS:
        db.session.execute(sa.text(f"DROP TRIGGER {name}" + (" ON contacts" if database_is_postgres() else "")))
    db.session.commit()


def database_is_postgres():
    from nudge.services.dialect import is_postgres
    return is_postgres()


def baseline_copy(account_id, rows=100_000):
    """What the database does at this moment without us: COPY rows straight into contacts (same indexes,
    no validation, no merge, no events), rolled back. The machine is shared, so this is the yardstick."""
    import io
    import uuid

    from nudge.extensions import db
    raw = db.session.connection().connection.dbapi_connection
    buffer = io.StringIO("".join(
        f"{uuid.uuid4()}\t{account_id}\tbaseline{i}@example{i % 97}.com\tAnn\tLee\tactive\t2026-01-01\t{{}}\t{{a,b}}\t"
        f"import\t2026-01-01\t2026-01-01\n" for i in range(rows)))
    cursor = raw.cursor()
    start = time.perf_counter()
    cursor.copy_expert("COPY contacts (id, account_id, email, first_name, last_name, status, subscription_date, "
                       "custom_fields, tags, source, created_at, updated_at) FROM STDIN", buffer)
    seconds = time.perf_counter() - start
    raw.rollback()
    return round(rows / seconds * 60)


def run_child(database_url, path, instance, without_side_tables=False, writers=None):
    env = dict(os.environ, NUDGE_INSTANCE_PATH=instance, NUDGE_DATABASE_URL=database_url, NUDGE_LOG_LEVEL="WARNING")
    env.pop("NUDGE_REDIS_URL", None)
    if writers:
        env["BENCH_IMPORT_WRITERS"] = str(writers)
    if without_side_tables:
        env["BENCH_WITHOUT_SIDE_TABLES"] = "1"
    out = subprocess.run([sys.executable, __file__, "--child", database_url, path], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def report(name, rows, result):
    first, rerun = result["first"], result["rerun"]
    print(f"{name}: {rows:,} rows")
    print(f"  import:  {first['seconds']:>7.1f} s  {first['rows_per_min']:>12,} rows/min  "
          f"(created {first['created']:,}, skipped {first['skipped']:,}, errors {first['errors']:,})")
    print(f"  re-run:  {rerun['seconds']:>7.1f} s  {rerun['rows_per_min']:>12,} rows/min  "
          f"(created {rerun['created']:,}, updated {rerun['updated']:,}, skipped {rerun['skipped']:,})")
    print(f"  peak RSS of the importing process: {result['peak_rss_mb']:.0f} MB")
    if "baseline_copy_rows_per_min" in result:
        print(f"  yardstick: a bare COPY into contacts right after: {result['baseline_copy_rows_per_min']:,} rows/min")


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[3])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--postgres-url", default=DEFAULT_PG)
    parser.add_argument("--sqlite-only", action="store_true")
    parser.add_argument("--postgres-only", action="store_true")
    parser.add_argument("--without-side-tables", action="store_true",
                        help="for comparison: drop the triggers that keep contact_tags/contact_values in step")
    parser.add_argument("--writers", type=int, help="IMPORT_WRITERS for the PostgreSQL import (default: the app's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nudge-import-bench-") as tmp:
        path = os.path.join(tmp, "contacts.csv")
        start = time.perf_counter()
        generate(path, args.rows)
        print(f"generated {args.rows:,} rows ({os.path.getsize(path) / 1e6:.0f} MB) in {time.perf_counter() - start:.1f} s")
        if not args.sqlite_only:
            reset_postgres(args.postgres_url)
            report("PostgreSQL", args.rows, run_child(args.postgres_url, path, os.path.join(tmp, "pg"),
                                                      args.without_side_tables, args.writers))
        if not args.postgres_only:
            sqlite_url = "sqlite:///" + os.path.join(tmp, "bench.db")
            report("SQLite", args.rows, run_child(sqlite_url, path, os.path.join(tmp, "sqlite"),
                                                  args.without_side_tables))


if __name__ == "__main__":
    main()
