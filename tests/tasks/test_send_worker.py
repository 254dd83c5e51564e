"""A real `nudge worker` process sending a campaign through a real SMTP server, killed with SIGKILL in the
middle of the send and started again: every recipient gets the email, nobody is skipped, and a repeat
(only possible for the message in flight on a connection at the kill) carries the same Message-ID."""
import asyncio
import email
import email.policy
import os
import signal
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from nudge.extensions import db
from nudge.models import Campaign, Contact, Message
from nudge.services import campaigns, sending
from nudge.tasks import huey
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL
from tests.delivery.conftest import RecordingHandler, free_port

RECIPIENTS = 240
WORKER_THREADS = 2


class SlowHandler(RecordingHandler):
    """Takes 10 ms per message, so the send lasts long enough to be interrupted."""

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(0.01)
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def smtp():
    handler = SlowHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, loop=asyncio.new_event_loop())
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture
def real_queue():
    huey.immediate = False
    huey.flush()
    yield huey
    huey.flush()
    huey.immediate = True


def start_worker(smtp_port):
    env = dict(os.environ, NUDGE_DATABASE_URL=TEST_DATABASE_URL, NUDGE_SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
               NUDGE_PROVIDERS_SMALL="smtp", NUDGE_PROVIDERS_BULK="smtp", NUDGE_SEND_CLAIM_TIMEOUT="2",
               NUDGE_SEND_WORKERS=str(WORKER_THREADS))
    if TEST_REDIS_URL:
        env["NUDGE_REDIS_URL"] = TEST_REDIS_URL
    nudge = os.path.join(os.path.dirname(sys.executable), "nudge")
    return subprocess.Popen([nudge, "worker", "-w", str(WORKER_THREADS)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def wait_for(check, seconds=90):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        db.session.rollback()
        if check():
            return True
        time.sleep(0.1)
    return False


def stop(worker, sig=signal.SIGINT):
    os.killpg(worker.pid, sig)
    try:
        _, err = worker.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        _, err = worker.communicate()
    print(err.decode(errors="replace")[-3000:])


def test_a_worker_killed_mid_send_resumes_without_skipping_or_duplicating(app, make_account, smtp, real_queue):
    handler, port = smtp
    app.config.update(SMTP_URL=f"smtp://127.0.0.1:{port}", PROVIDERS_SMALL=["smtp"], PROVIDERS_BULK=["smtp"],
                      SEND_WORKERS=WORKER_THREADS)
    account, owner = make_account()
    account.postal_address = "1 Market Street"
    db.session.add_all([Contact(account_id=account.id, email=f"r{n:04d}@example.org") for n in range(RECIPIENTS)])
    db.session.commit()
    campaign = campaigns.create_campaign(owner, {
        "name": "Crash test", "subject": "Hello", "from_email": "news@shop.example", "audience": {"all": True},
        "content_html": '<p>Hi</p><p>{{ account.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'})
    campaigns.send_now(owner, campaign.id)  # snapshots and enqueues on the real queue

    worker = start_worker(port)
    try:
        assert wait_for(lambda: len(handler.messages) >= RECIPIENTS // 4, seconds=60), "the worker never sent"
    finally:
        stop(worker, signal.SIGKILL)
    sent_before_kill = len(handler.messages)
    assert sent_before_kill < RECIPIENTS, "the send finished before the kill; make the handler slower"

    worker = start_worker(port)
    try:
        finished = wait_for(lambda: db.session.scalar(
            sa.select(Campaign.status).where(Campaign.id == campaign.id)) == "sent", seconds=90)
    finally:
        stop(worker)
    assert finished, "the campaign did not resume to the end"

    copies = {}
    for item in handler.messages:
        parsed = email.message_from_bytes(item.content, policy=email.policy.default)
        for rcpt in item.rcpt_tos:
            copies.setdefault(rcpt, []).append(parsed["Message-ID"])
    assert len(copies) == RECIPIENTS                                    # nobody skipped
    assert all(len(set(ids)) == 1 for ids in copies.values())           # one message per recipient
    repeats = sum(len(ids) - 1 for ids in copies.values())
    assert repeats <= WORKER_THREADS * sending.CONNECTIONS_PER_THREAD  # at most the ones in flight
    statuses = db.session.execute(sa.select(Message.status, sa.func.count()).where(
        Message.campaign_id == campaign.id).group_by(Message.status)).all()
    assert dict(statuses) == {"sent": RECIPIENTS}
    print(f"sent before the kill: {sent_before_kill}, physical repeats after restart: {repeats}")
