"""Fixtures shared by every test. The suite runs on SQLite, and again on PostgreSQL + Redis when
NUDGE_TEST_DATABASE_URL and NUDGE_TEST_REDIS_URL are set (make test does both in CI)."""
import os
import tempfile

# Before nudge is imported: the Huey instance and instance folder are read from the environment.
_instance = tempfile.mkdtemp(prefix="nudge-test-")
os.environ["NUDGE_INSTANCE_PATH"] = _instance
os.environ.pop("NUDGE_DATABASE_URL", None)
TEST_DATABASE_URL = os.environ.get("NUDGE_TEST_DATABASE_URL") or "sqlite:///" + os.path.join(_instance, "test.db")
TEST_REDIS_URL = os.environ.get("NUDGE_TEST_REDIS_URL") or None
if TEST_REDIS_URL:
    os.environ["NUDGE_REDIS_URL"] = TEST_REDIS_URL
else:
    os.environ.pop("NUDGE_REDIS_URL", None)

import pyotp  # noqa: E402
import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from flask import g, request_started  # noqa: E402

from nudge import create_app  # noqa: E402
from nudge.config import normalize_database_url  # noqa: E402
from nudge.extensions import db, limiter  # noqa: E402
from nudge.models import User  # noqa: E402
from nudge.models.types import utcnow  # noqa: E402
from nudge.services import accounts as accounts_service  # noqa: E402
from nudge.services.security import decrypt, encrypt, hash_password  # noqa: E402
from nudge.tasks import huey  # noqa: E402

PASSWORD = "Correct-Horse-42!"
huey.immediate = True


def config_for_tests(**overrides):
    config = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": normalize_database_url(TEST_DATABASE_URL),
        "REDIS_URL": TEST_REDIS_URL,
        "RATELIMIT_STORAGE_URI": TEST_REDIS_URL or "memory://",
        "WTF_CSRF_ENABLED": False,
        "REQUIRE_MFA": True,
        # The login fixture signs the same user in several times within one 30-second TOTP step.
        "MFA_REJECT_REUSED_CODES": False,
        "SERVER_NAME": None,
        # No test may query the internet: lookups go to a closed loopback port unless a test runs its own
        # DNS server (the dns_zone / dns_app fixtures).
        "DNS_NAMESERVERS": [("127.0.0.1", 9)],
        "DNS_TIMEOUT": 1.0,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def _schema():
    """Build the schema once per run with the real migrations."""
    from flask_migrate import upgrade
    app = create_app(config_for_tests())
    with app.app_context():
        _drop_everything()
        upgrade()
    yield
    with app.app_context():
        db.engine.dispose()


def _drop_everything():
    if db.engine.dialect.name == "postgresql":
        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    else:
        db.drop_all()
        with db.engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS alembic_version"))


BIG_TEST = 10_000   # contacts from which a test's rows are truncated rather than deleted


def _empty_tables():
    """DELETE every row, children first: on a test's few rows this is ~15× faster than TRUNCATE, which
    makes new files for every table. After a big test (a streamed import) PostgreSQL deletes with triggers
    off (session_replication_role = replica; the side tables are emptied like every other table): deleting
    tens of thousands of contacts would fire the side-table triggers, which plan with the statistics of a
    test's handful of rows (seconds turned into minutes)."""
    tables = [t.name for t in reversed(db.metadata.sorted_tables)]
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql" and _holds_a_big_test(conn):
            conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        for name in tables:
            conn.execute(sa.text(f"DELETE FROM {name}"))


def _holds_a_big_test(conn):
    return conn.scalar(sa.text(f"SELECT count(*) FROM (SELECT 1 FROM contacts LIMIT {BIG_TEST}) AS c")) >= BIG_TEST


@pytest.fixture
def make_app(_schema):
    """Build an app with config overrides; each gets its own app context for the test."""
    contexts = []

    def factory(**overrides):
        app = create_app(config_for_tests(**overrides))
        if not contexts and TEST_REDIS_URL:
            # Rate-limit counters live in Redis across tests: each test starts with none (in memory,
            # every app starts with none).
            limiter.reset()
        request_started.connect(_forget_signed_in_user, app)
        ctx = app.app_context()
        ctx.push()
        contexts.append(ctx)
        return app

    yield factory
    db.session.remove()
    if contexts:
        _empty_tables()  # in the test's own app context: building another app costs ~0.25 s
    else:
        with create_app(config_for_tests()).app_context():
            _empty_tables()
    for ctx in reversed(contexts):
        db.session.remove()
        ctx.pop()


def _forget_signed_in_user(sender, **extra):
    """Requests share the test's app context, where Flask-Login caches the user on g; forget it at
    each request so two test clients behave as two different browsers."""
    g.pop("_login_user", None)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


def totp_code(user):
    """The current TOTP code for a user enrolled by make_user/make_account."""
    return pyotp.TOTP(s=decrypt(db.session.get(User, user.id).totp_secret_encrypted)).now()


def enrol_mfa(user, secret=None):
    user.totp_secret_encrypted = encrypt(secret or pyotp.random_base32())
    user.mfa_enabled_at = utcnow()
    db.session.commit()
    return user


@pytest.fixture
def make_account(app):
    """make_account(name=..., email=..., plan=..., mfa=True) -> (account, owner)."""
    counter = [0]

    def factory(name=None, email=None, plan="starter", mfa=True, password=PASSWORD):
        counter[0] += 1
        n = counter[0]
        account, owner = accounts_service.create_account(
            name=name or f"Shop {n}", email=email or f"owner{n}@shop{n}.example", password=password,
            plan=plan, owner_name=f"Owner {n}")
        if mfa:
            enrol_mfa(owner)
        return account, owner

    return factory


@pytest.fixture
def make_user(app):
    """make_user(account, role="marketer", email=None, mfa=True) -> a team member."""
    counter = [0]

    def factory(account, role="marketer", email=None, mfa=True, password=PASSWORD, name=None):
        counter[0] += 1
        user = User(account_id=account.id, email=email or f"{role}{counter[0]}@team.example",
                    name=name or f"{role.title()} {counter[0]}", role=role,
                    password_hash=hash_password(password))
        db.session.add(user)
        db.session.commit()
        if mfa:
            enrol_mfa(user)
        return user

    return factory


@pytest.fixture
def login():
    """login(client, user): sign in through the real forms, answering the MFA challenge."""
    def do_login(client, user, password=PASSWORD):
        response = client.post("/login", data={"email": user.email, "password": password})
        if response.status_code == 302 and "/login/mfa" in response.headers["Location"]:
            response = client.post("/login/mfa", data={"code": totp_code(user)})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        return response
    return do_login


class TxtZone:
    """A dnslib resolver answering TXT queries from a dict the test edits: {name: [strings]}; other names
    NXDOMAIN; names in `failing` SERVFAIL. Thread-safe enough for dnslib's UDP thread (dict swaps)."""

    def __init__(self):
        self.records = {}
        self.failing = set()
        self.queries = []

    def publish(self, name, *values):
        self.records[name.rstrip(".").lower()] = list(values)

    def withdraw(self, name):
        self.records.pop(name.rstrip(".").lower(), None)

    def resolve(self, request, handler):
        from dnslib import QTYPE, RCODE, RR, TXT
        reply = request.reply()
        qname = str(request.q.qname).rstrip(".").lower()
        self.queries.append(qname)
        if qname in self.failing:
            reply.header.rcode = RCODE.SERVFAIL
        elif qname not in self.records:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.TXT, QTYPE.ANY):
            for value in self.records[qname]:
                # Long values (DKIM keys) are split into 255-byte strings, as DNS hosts publish them.
                chunks = [value[i:i + 255].encode() for i in range(0, len(value), 255)] or [b""]
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        return reply


@pytest.fixture
def dns_zone():
    """A DNS server on 127.0.0.1 (a free UDP port) serving a TxtZone: zone.port, zone.publish(name, value)."""
    import socket

    from dnslib.server import DNSLogger, DNSServer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    zone = TxtZone()
    server = DNSServer(zone, port=port, address="127.0.0.1", logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data"))
    server.start_thread()
    zone.port = port
    yield zone
    server.stop()
    server.server.server_close()


@pytest.fixture
def dns_app(make_app, dns_zone):
    """make_app with every DNS lookup sent to the test's own DNS server (nothing reaches the internet)."""
    def factory(**overrides):
        return make_app(DNS_NAMESERVERS=[("127.0.0.1", dns_zone.port)], DNS_TIMEOUT=2.0, **overrides)
    return factory
