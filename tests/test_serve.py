"""`nudge serve`: the web app and an embedded job worker in one process."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from nudge.tasks import huey, ping
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL
from tests.delivery.conftest import free_port


def _wait_for(url, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds}s")


@pytest.fixture
def real_queue():
    huey.immediate = False
    huey.flush()
    yield
    huey.flush()
    huey.immediate = True


def test_serve_answers_pages_and_runs_jobs_in_the_same_process(app, real_queue):
    port = free_port()
    env = dict(os.environ, NUDGE_DATABASE_URL=TEST_DATABASE_URL)
    env.pop("NUDGE_BASE_URL", None)
    if TEST_REDIS_URL:
        env["NUDGE_REDIS_URL"] = TEST_REDIS_URL
    nudge = os.path.join(os.path.dirname(sys.executable), "nudge")
    server = subprocess.Popen([nudge, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        response = _wait_for(f"http://127.0.0.1:{port}/login")
        assert response.status == 200
        assert "Content-Security-Policy" in response.headers
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=10) as spec:
            # Without NUDGE_BASE_URL, links (emails, images, the API's server) point at the port served.
            assert json.load(spec)["servers"] == [{"url": f"http://127.0.0.1:{port}"}]
        assert ping("embedded").get(blocking=True, timeout=60)["value"] == "embedded"
    finally:
        os.killpg(server.pid, signal.SIGTERM)   # what docker stop and systemd send: a graceful stop
        try:
            output = server.communicate(timeout=20)[0].decode(errors="replace")
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            output = server.communicate()[0].decode(errors="replace")
        print(output[-3000:])
    assert "Executing nudge.tasks.ping" in output
    assert server.returncode == 0 and "All workers have stopped" in output   # SIGTERM stopped it gracefully


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", "http://127.0.0.1:8080"), ("0.0.0.0", "http://127.0.0.1:8080"),
    ("mail.example.com", "http://mail.example.com:8080"), ("::1", "http://[::1]:8080")])
def test_links_follow_the_served_address_without_a_base_url(host, expected):
    from nudge.cli import local_base_url
    assert local_base_url(host, 8080) == expected
