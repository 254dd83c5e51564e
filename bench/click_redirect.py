"""Click redirect latency on gunicorn beside a bare Flask redirect on the same server (issue 5).

    .venv/bin/python bench/click_redirect.py            # PostgreSQL + Redis (PriorityRedisHuey): production
    .venv/bin/python bench/click_redirect.py --sqlite   # SQLite + SqliteHuey (the enqueue is a SQLite write)

Builds a fresh database (PostgreSQL `nudge_bench_click` with the real migrations, Redis db 10 for the job
queue; or a SQLite instance folder), an account, a contact, and a sent campaign with three tracked links and
the contact's Message row, and computes a real click URL with services.tracking.token_for. Starts gunicorn
(2 sync workers) on bench/click_wsgi.py: the product's app plus `/bench/bare`, a 302 to the same URL.
No job consumer runs during the load, so each click pays exactly what a recipient's click pays: verify
the token, look up the link (per-process cache), enqueue the record task, redirect.

wrk (Debian package wrk) warms both routes up, then drives each for 15 s with --latency, twice:
- saturated: 2 threads, 16 connections (more than the 2 workers can serve, so latency is mostly queueing
  and follows the per-request cost);
- light: 1 thread, 2 connections (about one request in flight per worker: latency is the service time).
It prints req/s, p50 and p99 of both routes, the gunicorn workers' CPU time per request (read from /proc,
so less sensitive than latency to other work on the machine) and the click / bare ratios.
Afterwards it starts a `nudge worker`, lets it drain the queue and prints the clicks recorded in
email_events against the click requests the server answered.
"""
import argparse
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BIN = os.path.dirname(sys.executable)

SERVER = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
DATABASE = "nudge_bench_click"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/10")
LINKS = ["https://shop.bench.example/spring", "https://shop.bench.example/sale?utm_source=nudge",
         "https://blog.bench.example/news"]
TARGET_INDEX = 1
CONTENT = ("<html><body><p>Hello {{ contact.first_name }},</p>"
           + "".join(f'<p><a href="{url}">link {n}</a></p>' for n, url in enumerate(LINKS))
           + '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>')


def admin(statement):
    import psycopg2
    conn = psycopg2.connect(SERVER + "/postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(statement)
    conn.close()


def environment(instance, sqlite):
    env = dict(os.environ, NUDGE_INSTANCE_PATH=instance, NUDGE_SECRET_KEY="bench-click-secret-key-0123456789",
               NUDGE_LOG_LEVEL="WARNING", BENCH_BARE_TARGET=LINKS[TARGET_INDEX])
    for name in ("NUDGE_DATABASE_URL", "NUDGE_REDIS_URL"):
        env.pop(name, None)
    if not sqlite:
        env.update(NUDGE_DATABASE_URL=f"{SERVER}/{DATABASE}", NUDGE_REDIS_URL=REDIS)
    return env


def prepare(env, sqlite):
    """A fresh database with one sent campaign and its one Message; returns (app context, ids, click path)."""
    if not sqlite:
        admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin(f'CREATE DATABASE "{DATABASE}"')
        import redis
        redis.Redis.from_url(REDIS).flushdb()
    subprocess.run([os.path.join(BIN, "nudge"), "db", "upgrade"], env=env, check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.environ.clear()
    os.environ.update(env)  # before nudge.tasks is imported: it picks the Huey backend from the environment
    from nudge import create_app
    from nudge.extensions import db
    from nudge.models import Message
    from nudge.models.types import utcnow
    from nudge.services import accounts, campaigns, contacts, tracking
    app = create_app()
    context = app.app_context()
    context.push()
    _, owner = accounts.create_account(name="Juniper & Co.", email="owner@bench.example",
                                       password="Bench-Password-42!", plan="starter", owner_name="Owner")
    contact = contacts.create_contact(owner, {"email": "ann@example.com", "first_name": "Ann"}, source="bench")
    campaign = campaigns.create_campaign(owner, {
        "name": "Bench clicks", "subject": "Spring news", "from_email": "news@juniper.example",
        "from_name": "Juniper & Co.", "content_html": CONTENT, "audience": {"all": True}})
    # What sending.start_send freezes (the tracked links) and what a delivered email leaves behind.
    _, campaign.links = tracking.prepare_html(campaign.content_html)
    assert campaign.links == LINKS, campaign.links
    now = utcnow()
    campaign.status, campaign.started_at, campaign.sent_at = "sent", now, now
    campaign.recipient_count = campaign.sent_count = 1
    message = Message(account_id=owner.account_id, campaign_id=campaign.id, contact_id=contact.id,
                      email=contact.email, status="sent", provider="outbox", attempts=1, sent_at=now)
    db.session.add(message)
    db.session.commit()
    path = f"/t/c/{tracking.token_for(message.id, campaign.id)}/{TARGET_INDEX}"
    return context, campaign.id, path


def start_server(env, port, workers):
    server = subprocess.Popen([os.path.join(BIN, "gunicorn"), "-w", str(workers), "-k", "sync",
                               "-b", f"127.0.0.1:{port}", "--log-level", "warning", "bench.click_wsgi:app"],
                              env=env, cwd=ROOT, start_new_session=True)
    for _ in range(200):
        try:
            get(port, "/bench/bare")
            return server
        except OSError:
            time.sleep(0.1)
    os.killpg(server.pid, signal.SIGTERM)
    raise SystemExit("gunicorn did not start")


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, response.getheader("Location")


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
TICKS = os.sysconf("SC_CLK_TCK")


def workers_cpu_seconds(master_pid):
    """User + system CPU time of gunicorn's worker processes so far."""
    children = subprocess.run(["pgrep", "-P", str(master_pid)], capture_output=True, text=True).stdout.split()
    total = 0
    for pid in children:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except FileNotFoundError:
            pass
    return total / TICKS


def wrk(port, path, seconds, connections, threads, master_pid):
    """Run wrk against one path; returns {requests, rps, p50, p99 (ms), cpu (server µs per request), errors}."""
    cpu_before = workers_cpu_seconds(master_pid)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency",
                          f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True).stdout
    result = {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
              "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
              "errors": " ".join(line.strip() for line in out.splitlines()
                                 if line.strip().startswith(("Non-2xx", "Socket errors")))}
    result["cpu"] = (workers_cpu_seconds(master_pid) - cpu_before) / max(result["requests"], 1) * 1e6
    result["load"] = os.getloadavg()[0]
    for pct in (50, 99):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        result[f"p{pct}"] = float(value) * UNITS[unit]
    return result


def pending():
    from nudge.tasks import huey
    return huey.pending_count()


def recorded_clicks(campaign_id):
    import sqlalchemy as sa

    from nudge.extensions import db
    from nudge.models import Campaign, EmailEvent
    db.session.rollback()
    events = db.session.scalar(sa.select(sa.func.count()).select_from(EmailEvent).where(
        EmailEvent.campaign_id == campaign_id, EmailEvent.event_type == "email.clicked"))
    unique = db.session.scalar(sa.select(Campaign.clicked_count).where(Campaign.id == campaign_id))
    return events, unique


def drain(env, campaign_id, expected, timeout=900):
    """Start a `nudge worker`, wait until `expected` clicks are in email_events (or it stalls); seconds taken."""
    worker = subprocess.Popen([os.path.join(BIN, "nudge"), "worker", "-w", "2", "-k", "process", "--no-periodic"],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    started = time.monotonic()
    last, last_change = -1, started
    try:
        while time.monotonic() - started < timeout:
            events, _ = recorded_clicks(campaign_id)
            if events >= expected:
                break
            if events != last:
                last, last_change = events, time.monotonic()
            elif time.monotonic() - last_change > 30:
                break  # nothing recorded for 30 s: report what is there
            time.sleep(0.5)
        return time.monotonic() - started
    finally:
        os.killpg(worker.pid, signal.SIGINT)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)


ROUTES = (("bare", "GET /bench/bare (bare 302)"), ("click", "GET /t/c/<token>/<index>"))


def measure(port, paths, args, master_pid):
    """Warm both routes up, then drive each for args.seconds, saturated and lightly loaded.
    Returns ({(phase, route): result}, click requests wrk counted)."""
    phases = (("saturated", args.connections, args.threads), ("light", args.light_connections, 1))
    results, counted = {}, 0
    for name, _ in ROUTES:
        warm = wrk(port, paths[name], args.warmup, args.connections, args.threads, master_pid)
        counted += warm["requests"] if name == "click" else 0
    for phase, connections, threads in phases:
        if connections <= 0:
            continue
        for name, _ in ROUTES:
            result = wrk(port, paths[name], args.seconds, connections, threads, master_pid)
            results[(phase, name)] = dict(result, connections=connections, threads=threads)
            counted += result["requests"] if name == "click" else 0
    return results, counted


def report(results, args, profile):
    print(f"gunicorn {args.workers} sync workers, wrk {args.seconds} s per route after a {args.warmup} s warm-up, "
          f"{profile}, no job consumer running")
    print(f"  {'phase':<22} {'route':<28} {'req/s':>7} {'p50':>9} {'p99':>9} {'CPU/req':>9} {'load':>5}  requests")
    for phase in ("saturated", "light"):
        if (phase, "bare") not in results:
            continue
        for name, label in ROUTES:
            r = results[(phase, name)]
            where = f"{phase} (-t{r['threads']} -c{r['connections']})"
            print(f"  {where:<22} {label:<28} {r['rps']:>7,.0f} {r['p50']:>6.2f} ms {r['p99']:>6.2f} ms "
                  f"{r['cpu']:>6,.0f} µs {r['load']:>5.1f}  {r['requests']:,}"
                  + (f"  ({r['errors']})" if r["errors"] else ""))
        bare, click = results[(phase, "bare")], results[(phase, "click")]
        print(f"  {'':<22} click / bare: p50 {click['p50'] / bare['p50']:.2f}x, p99 {click['p99'] / bare['p99']:.2f}x, "
              f"req/s {click['rps'] / bare['rps']:.2f}x, server CPU per request {click['cpu'] / bare['cpu']:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sqlite", action="store_true", help="SQLite database and SqliteHuey instead of PG + Redis")
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration per route and phase")
    parser.add_argument("--warmup", type=int, default=3, help="wrk warm-up per route, seconds")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections, saturated phase")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads, saturated phase")
    parser.add_argument("--light-connections", type=int, default=2,
                        help="wrk connections of the lightly loaded phase (one thread); 0 skips it")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn sync workers")
    parser.add_argument("--port", type=int, default=5110)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install -y wrk")

    instance = tempfile.mkdtemp(prefix="nudge-bench-click-")
    env = environment(instance, args.sqlite)
    profile = "SQLite + SqliteHuey" if args.sqlite else "PostgreSQL + Redis (PriorityRedisHuey)"
    print(f"{profile}: preparing the database …", flush=True)
    context, campaign_id, click_path = prepare(env, args.sqlite)
    paths = {"bare": "/bench/bare", "click": click_path}
    server = start_server(env, args.port, args.workers)
    try:
        for name, path in paths.items():
            status, location = get(args.port, path)
            if status != 302 or location != LINKS[TARGET_INDEX]:
                sys.exit(f"{name}: expected a 302 to {LINKS[TARGET_INDEX]}, got {status} {location}")
        results, counted = measure(args.port, paths, args, server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
    counted += 1  # the check above
    queued = pending()
    report(results, args, profile)
    print(f"record tasks queued: {queued:,} (click requests counted by wrk, warm-up and check included: "
          f"{counted:,}; each wrk run leaves the requests in flight when it stops answered but uncounted)")
    seconds = drain(env, campaign_id, queued)
    events, unique = recorded_clicks(campaign_id)
    print(f"after a `nudge worker` ran {seconds:.1f} s: {events:,} email.clicked events recorded "
          f"({'=' if events == queued else '!='} {queued:,} queued; {events / seconds:,.0f}/s), "
          f"campaign clicked_count {unique} (unique), tasks left {pending():,}")
    context.pop()
    shutil.rmtree(instance, ignore_errors=True)


if __name__ == "__main__":
    main()
