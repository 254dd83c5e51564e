"""Sending domains and test-send limits: what each costs.

    .venv/bin/python bench/sending_domains.py [--postgres URL]

On a fresh instance folder (SQLite unless --postgres): adding a domain (an RSA-2048 key is generated), a
"Check now" against a local dnslib DNS server (three names looked up at once), a check against a server that never
answers (bounded by NUDGE_DNS_TIMEOUT), the verified-From lookup every send/schedule/test and readiness
check makes, and claiming a test send (one INSERT, commit, one SUM). Prints medians in milliseconds.
"""
import argparse
import os
import socket
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def timed(fn, repeat):
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", help="a PostgreSQL URL to use instead of SQLite (its schema is rebuilt)")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    os.environ["NUDGE_INSTANCE_PATH"] = tempfile.mkdtemp(prefix="nudge-bench-")
    from dnslib.server import DNSLogger, DNSServer
    from flask_migrate import upgrade

    from nudge import create_app
    from nudge.config import normalize_database_url
    from nudge.extensions import db
    from nudge.services import accounts, sending_domains, usage
    from tests.conftest import TxtZone

    zone = TxtZone()
    server = DNSServer(zone, port=0, address="127.0.0.1", logger=DNSLogger("-request,-reply,-truncated,-error,"
                                                                          "-recv,-send,-data"))
    server.start_thread()
    port = server.server.server_address[1]
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))

    config = {"DNS_NAMESERVERS": [("127.0.0.1", port)], "DNS_TIMEOUT": 2.0, "TEST_SENDS_PER_HOUR": 10 ** 9}
    if args.postgres:
        config["SQLALCHEMY_DATABASE_URI"] = normalize_database_url(args.postgres)
    app = create_app(config)
    with app.app_context():
        if args.postgres:
            with db.engine.begin() as conn:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        upgrade()
        account, owner = accounts.create_account(name="Bench", email="owner@bench.example", password="Bench-Pass-42!",
                                                 plan="enterprise", owner_name="Owner")
        def add_and_remove():
            sending_domains.remove_domain(owner, sending_domains.add_domain(owner, "added.bench.example").id)
        add = timed(add_and_remove, args.repeat)
        row = sending_domains.add_domain(owner, "bench.example")
        zone.publish("bench.example", f"nudge-verify={row.verify_token}", "v=spf1 mx ~all")
        zone.publish(*sending_domains.dkim_record(row))
        zone.publish("_dmarc.bench.example", "v=DMARC1; p=none")
        check = timed(lambda: sending_domains.check_domain(owner, row.id), args.repeat)
        app.config["DNS_NAMESERVERS"] = [silent.getsockname()]
        app.config["DNS_TIMEOUT"] = 1.0
        stalled = timed(lambda: sending_domains.check_domain(owner, row.id), 2)
        verified = timed(lambda: sending_domains.from_verified(account.id, "news@mail.bench.example"), args.repeat * 10)
        unverified = timed(lambda: sending_domains.from_verified(account.id, "news@gmail.com"), args.repeat * 10)
        claim = timed(lambda: usage.claim_test_sends(account, 1), args.repeat * 5)
        dialect = db.engine.dialect.name
    server.stop()
    print(f"database: {dialect}")
    print(f"add + remove a domain (RSA-2048 key made):   {add:8.1f} ms")
    print(f"check now, 3 names at once, local DNS:       {check:8.1f} ms")
    print(f"check now, silent DNS server, timeout 1 s:   {stalled:8.1f} ms")
    print(f"verified From lookup (verified domain):      {verified:8.2f} ms")
    print(f"verified From lookup (unverified address):   {unverified:8.2f} ms")
    print(f"claim a test send (insert, commit, sum):     {claim:8.2f} ms")


if __name__ == "__main__":
    main()
