"""What NUDGE_TRACKING_KEYS costs a tracked request: verifying one token with 1, 2 and 4 listed keys.

    .venv/bin/python bench/tracking_keys.py

Every open, click, view, preferences and unsubscribe request verifies its token (services.tracking.ids_from)
against the listed keys, the signing one first, until one matches. Prints the median time per verification
of a token signed with the first key, with the last listed key, and of a refused one (it tries them all),
next to signing one token (what the sending pipeline does per recipient). No database: an app context only.
"""
import os
import statistics
import sys
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ROUNDS, PER_ROUND = 7, 20_000


def per_call_us(func):
    """Median over ROUNDS of the mean time of one call (µs)."""
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(PER_ROUND):
            func()
        times.append((time.perf_counter() - started) / PER_ROUND * 1e6)
    return statistics.median(times)


def main():
    from flask import Flask

    from nudge.services import tracking
    app = Flask("bench")
    app.config["SECRET_KEY"] = "bench-secret-key-0123456789"
    message_id, campaign_id = uuid.uuid4(), uuid.uuid4()
    secrets = [f"bench-tracking-secret-{n}-0123456789" for n in range(4)]
    stranger = "a-key-that-is-not-listed-0123456789"
    with app.app_context():
        def token_signed_with(secret):
            app.config["TRACKING_KEYS"] = [secret]
            return tracking.token_for(message_id, campaign_id)
        tokens = {secret: token_signed_with(secret) for secret in secrets + [stranger]}
        print(f"{'listed keys':>11}  {'sign':>8}  {'first key':>10}  {'last key':>9}  {'refused':>8}   (µs per token)")
        for count in (1, 2, 4):
            listed = secrets[:count]
            app.config["TRACKING_KEYS"] = listed
            assert tracking.ids_from(tokens[listed[-1]]) == (message_id, campaign_id)
            assert tracking.ids_from(tokens[stranger]) is None
            key = tracking.signing_key()
            sign = per_call_us(lambda: tracking.token_for(message_id, campaign_id, key))
            first = per_call_us(lambda: tracking.ids_from(tokens[listed[0]]))
            last = per_call_us(lambda: tracking.ids_from(tokens[listed[-1]]))
            refused = per_call_us(lambda: tracking.ids_from(tokens[stranger]))
            print(f"{count:>11}  {sign:>8.2f}  {first:>10.2f}  {last:>9.2f}  {refused:>8.2f}")


if __name__ == "__main__":
    main()
