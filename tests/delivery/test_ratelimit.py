"""Per-receiving-domain token buckets (a controllable clock instead of sleeping)."""
import threading

import pytest

from nudge.config import load_config
from nudge.delivery.ratelimit import DomainLimiter, parse_rate_limits


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_limited_domain_gets_its_rate_and_is_told_how_long_to_wait():
    clock = Clock()
    limiter = DomainLimiter({"gmail.com": 2}, clock=clock)
    assert [limiter.acquire("gmail.com") for _ in range(2)] == [0.0, 0.0]
    assert limiter.acquire("gmail.com") == pytest.approx(0.5)
    assert limiter.acquire("GMAIL.com") == pytest.approx(0.5)     # asking takes nothing
    clock.now += 0.5
    assert limiter.acquire("gmail.com") == 0.0
    assert limiter.acquire("gmail.com") == pytest.approx(0.5)
    clock.now += 60                                                 # idle: the burst refills, no more
    assert [limiter.acquire("gmail.com") for _ in range(3)][2] > 0


def test_unknown_domains_are_unlimited_and_subdomains_share_the_parent_limit():
    clock = Clock()
    limiter = DomainLimiter({"outlook.com": 1}, clock=clock)
    assert all(limiter.acquire("example.org") == 0.0 for _ in range(1000))
    assert limiter.acquire("eu.outlook.com") == 0.0
    assert limiter.acquire("outlook.com") == pytest.approx(1.0)
    assert limiter.acquire("notoutlook.com") == 0.0


def test_threads_never_get_more_than_the_bucket_holds():
    limiter = DomainLimiter({"gmail.com": 50}, clock=Clock())      # the clock never moves
    granted = []

    def worker():
        granted.append(sum(1 for _ in range(100) if limiter.acquire("gmail.com") == 0.0))
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(granted) == 50


def test_limits_come_from_the_environment(tmp_path):
    config = load_config({"NUDGE_INSTANCE_PATH": str(tmp_path),
                          "NUDGE_DOMAIN_RATE_LIMITS": "gmail.com=50, Outlook.com=30,yahoo.com=0.5"})
    assert config["DOMAIN_RATE_LIMITS"] == {"gmail.com": 50.0, "outlook.com": 30.0, "yahoo.com": 0.5}
    assert parse_rate_limits("") == {}
    for bad in ("gmail.com", "gmail.com=fast", "gmail.com=-1", "=5", "a@gmail.com=5"):
        with pytest.raises(ValueError):
            parse_rate_limits(bad)
