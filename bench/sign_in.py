"""What the sign-in hardening costs, and what parallel guessing gets past it.

    .venv/bin/python bench/sign_in.py                                        # SQLite in a temporary folder
    .venv/bin/python bench/sign_in.py --database postgresql://postgres@127.0.0.1/bench

Prints the time of the attempt claim alone (the lockout's database work per sign-in), of auth.authenticate() with the right password (claim + give back the attempt) and with a
wrong one (claim + audit + failure), with the production password hash (Argon2id defaults), and how many
password checks a burst of parallel wrong guesses for one email from one address got (LOCKOUT_THRESHOLD).
"""
import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NUDGE_INSTANCE_PATH", tempfile.mkdtemp(prefix="nudge-bench-"))
os.environ.pop("NUDGE_REDIS_URL", None)

PASSWORD = "Bench-Password-42!"


def timed(fn, rounds):
    times = []
    for n in range(rounds):
        start = time.perf_counter()
        fn(n)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), max(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", help="a PostgreSQL URL (its public schema is rebuilt)")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=32)
    args = parser.parse_args()

    import sqlalchemy as sa
    from flask_migrate import upgrade

    from nudge import create_app
    from nudge.config import normalize_database_url
    from nudge.errors import AuthenticationFailed
    from nudge.extensions import db
    from nudge.models import LoginAttempt
    from nudge.services import accounts, auth

    url = normalize_database_url(args.database) if args.database else \
        "sqlite:///" + os.path.join(os.environ["NUDGE_INSTANCE_PATH"], "bench.db")
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "RATELIMIT_STORAGE_URI": "memory://"})
    with app.app_context():
        if url.startswith("postgresql"):
            with db.engine.begin() as conn:
                conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        upgrade()
        _, owner = accounts.create_account(name="Bench", email="bench@bench.example", password=PASSWORD)
        email = owner.email

        def right(n):
            auth.authenticate(email, PASSWORD, ip="192.0.2.1")

        def wrong(n):
            try:
                auth.authenticate(email, "Wrong-password-1!", ip=f"198.51.{n // 250}.{n % 250 + 1}")
            except AuthenticationFailed:
                pass

        def claim_only(n):
            auth.claim_attempt(email, "192.0.2.2")
            auth.release_attempt(email, "192.0.2.2")

        print(f"database: {db.engine.dialect.name}; Argon2id defaults")
        median, worst = timed(claim_only, args.rounds * 5)
        print(f"  claim + give back an attempt (the lockout's added work): median {median:6.2f} ms, max {worst:6.2f} ms")
        for label, fn in (("right password", right), ("wrong password", wrong)):
            median, worst = timed(fn, args.rounds)
            print(f"  authenticate, {label:15}: median {median:6.1f} ms, max {worst:6.1f} ms ({args.rounds} rounds)")

        checks, lock = [], threading.Lock()
        real_verify = auth.verify_password

        def counting_verify(password_hash, password):
            with lock:
                checks.append(1)
            return real_verify(password_hash, password)
        auth.verify_password = counting_verify
        start = threading.Barrier(args.parallel)

        def guess(n):
            with app.app_context():
                start.wait()
                try:
                    auth.authenticate(email, f"Guess-{n}", ip="203.0.113.9")
                except AuthenticationFailed:
                    pass
                finally:
                    db.session.remove()

        began = time.perf_counter()
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(guess, range(args.parallel)))
        elapsed = time.perf_counter() - began
        auth.verify_password = real_verify
        row = db.session.scalar(sa.select(LoginAttempt).where(LoginAttempt.ip == "203.0.113.9"))
        print(f"  {args.parallel} parallel wrong guesses from one address: {len(checks)} password checks "
              f"(LOCKOUT_THRESHOLD {app.config['LOCKOUT_THRESHOLD']}), locked: {row.locked_until is not None}, "
              f"{elapsed * 1000:.0f} ms for the burst")


if __name__ == "__main__":
    main()
