"""The product's app plus one bench-only route, for bench/click_redirect.py: `gunicorn bench.click_wsgi:app`.

`/bench/bare` is the floor the click redirect is compared with: a 302 to the same URL, on the same server,
through the same app (its before/after-request hooks included), doing nothing else. It exists only here."""
import os

from flask import redirect

from nudge import create_app

app = create_app()
BARE_TARGET = os.environ.get("BENCH_BARE_TARGET", "https://shop.bench.example/spring")


@app.route("/bench/bare")
def bench_bare():
    """A bare Flask redirect: no token, no cache, no queue."""
    return redirect(BARE_TARGET, code=302)
