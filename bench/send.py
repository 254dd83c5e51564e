"""Campaign send throughput: N recipients through one `nudge worker` to Postfix's smtp-sink, end to end.

    .venv/bin/python bench/send.py                          # 100,000 recipients, worker -w 4 (threads)
    .venv/bin/python bench/send.py --recipients 20000 --workers 2 --connections 16 --template plain

Builds the PostgreSQL database `nudge_bench_send` with the real migrations, an account with N active
contacts (one INSERT … SELECT) and a campaign whose content is a gallery template (`--template`: the
newsletter, ~49 KB of HTML and 11 tracked links, by default; `announcement` ~32 KB; `plain` ~11 KB),
personalised per recipient. Starts `smtp-sink -u nobody 127.0.0.1:2526 1000` and one `nudge worker`
process (PostgreSQL + Redis, provider smtp, NUDGE_SEND_WORKERS = worker threads, NUDGE_SEND_CONNECTIONS =
--connections per thread), then presses Send
through the service (campaigns.send_now: checks, content freeze, the snapshot, enqueue) and measures
- first email: from the Send call to the first message's sent_at;
- throughput: recipients / (last sent_at - Send), in emails per minute;
- the worker's peak RSS (VmHWM of the worker process and its children).
Then it prints the size of the campaign's messages on the wire and the same sink's ceiling for them: a
raw smtplib blast of 20,000 of the campaign's own composed messages, with as many threads as the worker,
and the pipeline / ceiling ratio; and the same messages sent by the worker's own SMTP client alone (waves
over as many connections, no rendering and no recording), which says what the rest of the pipeline costs. Targets (issue 5): >= 100,000 emails/min, first email < 1 s, worker
peak RSS < 150 MB.
"""
import argparse
import datetime as dt
import os
import shutil
import signal
import smtplib
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SERVER = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DATABASE = "nudge_bench_send"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/9")
SINK_PORT = 2526


def admin(statement):
    import psycopg2
    conn = psycopg2.connect(SERVER + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def environment(instance, workers, connections):
    return dict(os.environ, NUDGE_DATABASE_URL=f"{SERVER}/{DATABASE}", NUDGE_REDIS_URL=REDIS,
                NUDGE_INSTANCE_PATH=instance, NUDGE_SMTP_URL=f"smtp://127.0.0.1:{SINK_PORT}",
                NUDGE_PROVIDERS_SMALL="smtp", NUDGE_PROVIDERS_BULK="smtp", NUDGE_SEND_WORKERS=str(workers),
                NUDGE_SEND_CONNECTIONS=str(connections),
                NUDGE_BASE_URL="https://mail.bench.example", NUDGE_LOG_LEVEL="WARNING")


def start_sink():
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.path.exists(sink):
        sys.exit("smtp-sink not found: apt-get install -y postfix")
    process = subprocess.Popen([sink, "-u", "nobody", f"127.0.0.1:{SINK_PORT}", "1000"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        try:
            smtplib.SMTP("127.0.0.1", SINK_PORT, timeout=1).quit()
            return process
        except OSError:
            time.sleep(0.1)
    sys.exit("smtp-sink did not start")


def prepare(env, recipients, template="newsletter"):
    """A fresh database: account, N contacts, a draft campaign with the gallery newsletter."""
    admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    admin(f'CREATE DATABASE "{DATABASE}"')
    nudge = os.path.join(os.path.dirname(sys.executable), "nudge")
    subprocess.run([nudge, "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    os.environ.update({k: v for k, v in env.items() if k.startswith("NUDGE_")})
    import sqlalchemy as sa

    from nudge import create_app
    from nudge.extensions import db
    from nudge.services import accounts, campaigns, rendering, templates
    app = create_app()
    context = app.app_context()
    context.push()
    account, owner = accounts.create_account(name="Juniper & Co.", email="owner@bench.example",
                                             password="Bench-Password-42!", plan="starter", owner_name="Owner")
    account.postal_address = "12 Orchard Lane, Portland, OR 97201"
    account.monthly_email_limit = recipients * 2
    db.session.commit()
    db.session.execute(sa.text("""
        INSERT INTO contacts (id, account_id, email, first_name, last_name, status, subscription_date,
                              custom_fields, tags, source, created_at, updated_at)
        SELECT gen_random_uuid(), :account, 'user' || i || '@example' || (i % 50) || '.com',
               (ARRAY['Ann','Bob','Chloé','Dmitri','Eva','Farid','Grace','Hiro'])[1 + i % 8], 'Last' || (i % 1000),
               'active', now(), '{}'::jsonb, ARRAY['customer'], 'bench', now(), now()
        FROM generate_series(1, :n) AS i"""), {"account": str(account.id), "n": recipients})
    db.session.commit()
    templates.sync_gallery()
    chosen = next(t for t in templates.list_gallery() if t.slug == template)
    html = templates.latest_version(chosen.id).content_html
    campaign = campaigns.create_campaign(owner, {
        "name": "Bench newsletter", "subject": "Spring news for {{ contact.first_name }}",
        "from_email": "news@juniper.example", "from_name": "Juniper & Co.", "content_html": html,
        "audience": {"all": True}})
    return app, context, owner, campaign, rendering


def peak_rss_mb(pid):
    """VmHWM of a process and its children, in MB."""
    total = 0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(child) for child in children]
    except OSError:
        pass
    for one in pids:
        try:
            with open(f"/proc/{one}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1]) / 1024
        except FileNotFoundError:
            pass
    return total


def watch_rss(pid, stop, result):
    while not stop.is_set():
        result[0] = max(result[0], peak_rss_mb(pid))
        time.sleep(0.5)


def campaign_messages(campaign_id, count):
    """The campaign's own composed messages for `count` of its recipients, as the pipeline builds them."""
    import sqlalchemy as sa

    from nudge.extensions import db
    from nudge.models import Message
    from nudge.services import sending
    content = sending.campaign_content(campaign_id)
    ids = db.session.scalars(sa.select(Message.id).where(Message.campaign_id == campaign_id).limit(count)).all()
    return [content.raw(content.outgoing(message, contact)) for message, contact in sending._batch_rows(content, ids)]


def _timed_threads(blast, raws, threads):
    """Seconds for `threads` threads to run blast() over their share of raws each."""
    workers = [threading.Thread(target=blast, args=(raws[i::threads],)) for i in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def ceiling(raws, threads):
    """A raw smtplib blast of prebuilt messages at the same sink: messages per second."""
    def blast(chunk):
        client = smtplib.SMTP("127.0.0.1", SINK_PORT)
        for index, raw in enumerate(chunk):
            client.sendmail("news@juniper.example", [f"u{index}@example.com"], raw)
        client.quit()
    return len(raws) / _timed_threads(blast, raws, threads)


def wave_ceiling(raws, threads, connections):
    """The same messages through the worker's SMTP client alone (SMTPProvider.send_each: a wave over
    `connections` connections per thread), without rendering or recording: messages per second."""
    from collections import namedtuple

    from nudge.delivery.smtp import SMTPProvider
    envelope = namedtuple("Envelope", "sender to_email")

    def blast(chunk):
        providers = [SMTPProvider(f"smtp://127.0.0.1:{SINK_PORT}") for _ in range(connections)]
        for start in range(0, len(chunk), connections):
            wave = chunk[start:start + connections]
            items = [(envelope("news@juniper.example", f"u{start + i}@example.com"), raw) for i, raw in enumerate(wave)]
            results = SMTPProvider.send_each(providers[:len(wave)], items)
            assert all(result.ok for result in results), results
        for provider in providers:
            provider.close()
    return len(raws) / _timed_threads(blast, raws, threads)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=4, help="worker threads of the one `nudge worker`")
    parser.add_argument("--connections", type=int, default=8, help="SMTP connections per sending thread")
    parser.add_argument("--worker-type", default="thread", choices=["thread", "process"])
    parser.add_argument("--template", default="newsletter",
                        help="the gallery template of the campaign's content (newsletter: ~49 KB of HTML, the "
                             "heaviest; announcement ~32 KB; plain ~11 KB)")
    args = parser.parse_args()

    instance = tempfile.mkdtemp(prefix="nudge-bench-send-")
    env = environment(instance, args.workers, args.connections)
    sink = start_sink()
    import redis
    redis.Redis.from_url(REDIS).flushdb()
    print(f"preparing {args.recipients:,} contacts and the campaign …", flush=True)
    app, context, owner, campaign, _ = prepare(env, args.recipients, args.template)

    nudge = os.path.join(os.path.dirname(sys.executable), "nudge")
    log = open(os.path.join(instance, "worker.log"), "wb")  # a pipe nobody reads would block the worker
    worker = subprocess.Popen([nudge, "worker", "-w", str(args.workers), "-k", args.worker_type, "--no-periodic"],
                              env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    time.sleep(3)  # the consumer is up and idle
    rss, stop_rss = [0.0], threading.Event()
    threading.Thread(target=watch_rss, args=(worker.pid, stop_rss, rss), daemon=True).start()

    import sqlalchemy as sa

    from nudge.extensions import db
    from nudge.models import Campaign, Message
    from nudge.services import campaigns
    try:
        send_at = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        started = time.perf_counter()
        campaigns.send_now(owner, campaign.id)
        print(f"send_now (checks, content freeze, snapshot, enqueue): {time.perf_counter() - started:.2f} s",
              flush=True)
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            db.session.rollback()
            status, sent = db.session.execute(sa.select(Campaign.status, Campaign.sent_count)
                                              .where(Campaign.id == campaign.id)).one()
            if status != "sending":
                break
            time.sleep(0.5)
        db.session.rollback()
        first, last, sent, failed = db.session.execute(sa.select(
            sa.func.min(Message.sent_at), sa.func.max(Message.sent_at),
            sa.func.count().filter(Message.status == "sent"), sa.func.count().filter(Message.status == "failed"))
            .where(Message.campaign_id == campaign.id)).one()
    finally:
        stop_rss.set()
        peak = max(rss[0], peak_rss_mb(worker.pid))
        os.killpg(worker.pid, signal.SIGINT)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
    seconds = (last - send_at).total_seconds()
    rate = sent / seconds * 60
    print(f"campaign status: {status}; sent {sent:,}, failed {failed:,}")
    print(f"first email after Send: {(first - send_at).total_seconds() * 1000:.0f} ms")
    print(f"Send -> last email: {seconds:.1f} s = {rate:,.0f} emails/min ({rate / 60:,.0f}/s)")
    print(f"worker peak RSS ({args.worker_type} x {args.workers}, {args.connections} connections each): {peak:.0f} MB")
    raws = campaign_messages(campaign.id, min(20_000, args.recipients))
    print(f"message size on the wire: {sum(map(len, raws)) / len(raws) / 1024:.0f} KB ({args.template})")
    blast = ceiling(raws, args.workers)
    print(f"raw smtplib blast at the same sink, {args.workers} threads: {blast * 60:,.0f}/min ({blast:,.0f}/s); "
          f"pipeline / ceiling = {rate / 60 / blast:.0%}")
    waves = wave_ceiling(raws, args.workers, args.connections)
    print(f"the worker's SMTP client alone, same messages, {args.workers} threads x {args.connections} connections: "
          f"{waves * 60:,.0f}/min ({waves:,.0f}/s); pipeline / that = {rate / 60 / waves:.0%}")
    context.pop()
    sink.terminate()


if __name__ == "__main__":
    main()
