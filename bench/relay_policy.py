"""What the account-relay checks cost (docs/delivery.md, Account SMTP relays): classifying an address, resolving
and checking a name, and opening an SMTP session to a local aiosmtpd with and without a RelayPolicy.

    PYTHONPATH=. .venv/bin/python bench/relay_policy.py

The policy's work happens once per connection (the sending pipeline keeps connections open), so what
matters is its cost next to a connection's own: printed side by side.
"""
import asyncio
import socket
import statistics
import time

from aiosmtpd.controller import Controller

from nudge.delivery.destinations import public_addresses, refusal
from nudge.delivery.smtp import RelayPolicy, SMTPProvider, parse_smtp_url

ADDRESSES = ["93.184.215.14", "10.1.2.3", "169.254.169.254", "::ffff:127.0.0.1", "2001:4860:4860::8888", "fe80::1"]


def per_call(fn, repeat):
    """Median seconds per call over 5 rounds of `repeat` calls."""
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        rounds.append((time.perf_counter() - start) / repeat)
    return statistics.median(rounds)


class Accept:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def session_costs(port, policies, repeat=100, rounds=7):
    """Median seconds to open (connect, EHLO) and close one SMTP session, per policy; the policies take turns
    round by round, so a busy machine slows them alike."""
    providers = [SMTPProvider(settings=parse_smtp_url(f"smtp://127.0.0.1:{port}"), local_hostname="bench.test",
                              policy=policy) for policy in policies]
    timings = [[] for _ in providers]
    for _ in range(rounds):
        for provider, timing in zip(providers, timings):
            start = time.perf_counter()
            for _ in range(repeat):
                error = provider._open()
                assert error is None, error
                provider.close()
            timing.append((time.perf_counter() - start) / repeat)
    return [statistics.median(timing) for timing in timings]


def main():
    print(f"refusal(), per address:                    {per_call(lambda: [refusal(a) for a in ADDRESSES], 2000) / len(ADDRESSES) * 1e6:8.1f} µs")
    print(f"public_addresses() of an IP literal:       {per_call(lambda: public_addresses('93.184.215.14', 587), 2000) * 1e6:8.1f} µs")
    resolve_localhost = per_call(lambda: socket.getaddrinfo("localhost", 587, type=socket.SOCK_STREAM), 500)
    checked_localhost = per_call(lambda: public_addresses("localhost", 587, allow_private=True), 500)
    print(f"getaddrinfo('localhost') alone:            {resolve_localhost * 1e6:8.1f} µs")
    print(f"public_addresses('localhost') (+ checks):  {checked_localhost * 1e6:8.1f} µs")
    port = socket.create_server(("127.0.0.1", 0)).getsockname()[1]
    controller = Controller(Accept(), hostname="127.0.0.1", port=port, loop=asyncio.new_event_loop())
    controller.start()
    try:
        plain, guarded = session_costs(port, [None, RelayPolicy(allow_private=True, ports=(port,))])
    finally:
        controller.stop()
    print(f"SMTP session (connect, EHLO, QUIT), trusted: {plain * 1e3:7.2f} ms")
    print(f"SMTP session with a RelayPolicy:             {guarded * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
