"""API latency under load: token issue and GET /api/v1/account on gunicorn, as a production deployment runs.

    .venv/bin/python bench/api_latency.py                       # SQLite, in-process rate-limit counters
    .venv/bin/python bench/api_latency.py --postgres --redis    # PostgreSQL + Redis (the production profile)

Starts gunicorn (2 sync workers) on a fresh instance folder, creates accounts and API clients with the
`nudge` CLI, then drives keep-alive HTTP connections from threads and prints p50/p95/p99 and req/s.
Requests are spread over several enterprise accounts so the per-account rate limit (2,000/min) is
exercised but not hit. The spec's target: API p95 < 200 ms.
"""
import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
PASSWORD = "Bench-Password-42!"


def run(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    return out.stdout.strip().splitlines()[-1]


def percentile(values, pct):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(pct / 100 * (len(values) - 1))))]


def start_server(env, port, workers):
    server = subprocess.Popen([os.path.join(BIN, "gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}",
                               "--log-level", "warning", "wsgi:app"], env=env, cwd=ROOT, start_new_session=True)
    for _ in range(200):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/login")
            conn.getresponse().read()
            return server
        except OSError:
            time.sleep(0.1)
    raise SystemExit("gunicorn did not start")


def get_token(port, client_id, secret):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    body = json.dumps({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    start = time.perf_counter()
    conn.request("POST", "/api/v1/oauth/token", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    data = json.loads(response.read())
    return data["access_token"], time.perf_counter() - start


def drive(port, tokens, requests_per_thread, latencies, statuses):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(requests_per_thread):
        token = tokens[i % len(tokens)]
        start = time.perf_counter()
        conn.request("GET", "/api/v1/account", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - start)
        statuses[response.status] = statuses.get(response.status, 0) + 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", action="store_true", help="use postgresql://postgres@127.0.0.1:5432/nudge_bench")
    parser.add_argument("--redis", action="store_true", help="use redis://127.0.0.1:6379/3 for jobs and rate limits")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--accounts", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=5099)
    args = parser.parse_args()

    instance = tempfile.mkdtemp(prefix="nudge-bench-")
    env = dict(os.environ, NUDGE_INSTANCE_PATH=instance, NUDGE_REQUIRE_MFA="1")
    if args.postgres:
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", "DROP DATABASE IF EXISTS nudge_bench"], check=True)
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", "CREATE DATABASE nudge_bench"], check=True)
        env["NUDGE_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:5432/nudge_bench"
    if args.redis:
        env["NUDGE_REDIS_URL"] = "redis://127.0.0.1:6379/3"
        subprocess.run(["redis-cli", "-n", "3", "flushdb"], check=True, capture_output=True)
    nudge = os.path.join(BIN, "nudge")
    subprocess.run([nudge, "db", "upgrade"], env=env, check=True, capture_output=True, cwd=ROOT)
    clients = []
    for n in range(args.accounts):
        email = f"owner{n}@bench.example"
        run([nudge, "create-account", "--name", f"Bench {n}", "--email", email, "--password", PASSWORD,
             "--plan", "enterprise"], env)
        clients.append(json.loads(run([nudge, "create-api-client", "--email", email, "--name", "bench",
                                       "--scopes", "account:admin"], env)))

    server = start_server(env, args.port, args.workers)
    try:
        token_times, tokens = [], []
        for client in clients:
            token, elapsed = get_token(args.port, client["client_id"], client["client_secret"])
            tokens.append(token)
            token_times.append(elapsed)
        drive(args.port, tokens, 50, [], {})  # warm-up: connections, imports, caches
        latencies, statuses = [], {}
        per_thread = args.requests // args.threads
        threads = [threading.Thread(target=drive, args=(args.port, tokens, per_thread, latencies, statuses))
                   for _ in range(args.threads)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        shutil.rmtree(instance, ignore_errors=True)

    profile = f"{'PostgreSQL' if args.postgres else 'SQLite'} + {'Redis' if args.redis else 'in-process'} rate limits"
    print(f"GET /api/v1/account on gunicorn ({args.workers} sync workers), {profile}")
    print(f"  {len(latencies)} requests, {args.threads} keep-alive connections, {elapsed:.2f} s, "
          f"{len(latencies) / elapsed:,.0f} req/s, statuses {statuses}")
    print(f"  p50 {percentile(latencies, 50) * 1000:.1f} ms  p95 {percentile(latencies, 95) * 1000:.1f} ms  "
          f"p99 {percentile(latencies, 99) * 1000:.1f} ms  max {max(latencies) * 1000:.1f} ms")
    print(f"POST /api/v1/oauth/token: median {statistics.median(token_times) * 1000:.1f} ms over {len(token_times)}")


if __name__ == "__main__":
    main()
