"""Per-recipient rendering throughput: the gallery newsletter personalised for 10,000 distinct contacts.

    .venv/bin/python bench/render.py                 # nudge/gallery/newsletter.json, 10,000 contacts
    .venv/bin/python bench/render.py --contacts 50000 --runs 5

One process pinned to one core, no parallelism. The template is compiled once (blocks -> MJML -> HTML,
Jinja checks, plain-text part, warnings: the one-time cost of saving a version), then each recipient
gets build_context() and render_version() - the HTML and the plain-text part - as a send does. Prints
the compile cost, renders/second (median of the runs) and microseconds per recipient. Target: >= 5,000
personalised renders/s on one core.
"""
import argparse
import json
import os
import statistics
import sys
import time
import uuid
from types import SimpleNamespace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nudge.services import rendering  # noqa: E402

BASE_URL = "https://mail.example.com"
FIRST = ["Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Tim", "Barbara", "Dennis", "Frances"]
LAST = ["Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Berners-Lee", "Liskov", "Ritchie"]
TAGS = ["customer", "vip", "newsletter", "beta", "workshop", "wholesale"]
ACCOUNT = {"name": "Juniper & Co.", "postal_address": "14 Kiln Lane\nPotterton PT1 2AB\nUnited Kingdom",
           "default_from_name": "Juniper & Co.", "default_from_email": "hello@juniper.example.com"}


def make_contacts(count):
    """Distinct contacts as a send loads them: built-in fields, tags, custom fields (some missing)."""
    contacts = []
    for n in range(count):
        custom = {"company": f"Studio {n}", "plan": ("free", "pro", "team")[n % 3], "renewal": f"2026-{n % 12 + 1:02d}-15"}
        if n % 10 == 0:
            del custom["company"]
        contacts.append({"email": f"person{n}@example{n % 50}.com", "first_name": FIRST[n % len(FIRST)] + str(n),
                         "last_name": LAST[n % len(LAST)] if n % 7 else None,
                         "tags": [TAGS[n % len(TAGS)], TAGS[(n * 7) % len(TAGS)]], "custom_fields": custom})
    return contacts


def load_document(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def time_compile(doc, repeat=5):
    """Median seconds to compile the document once, and the Compiled result."""
    timings, compiled = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        compiled = rendering.compile_template(content_json=doc, base_url=BASE_URL)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings), compiled


def time_jinja_compile(compiled, repeat=5):
    """Median seconds to turn a version's HTML and text into cached Jinja templates (a cache miss)."""
    timings = []
    for _ in range(repeat):
        start = time.perf_counter()
        rendering.CompiledVersion(compiled.html, compiled.text)
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def run_once(version, contacts):
    """Seconds to personalise every contact (context + HTML + text), and the bytes produced."""
    produced = 0
    start = time.perf_counter()
    for n, contact in enumerate(contacts):
        token = f"{n:x}"
        context = rendering.build_context(ACCOUNT, contact, unsubscribe_url=f"{BASE_URL}/u/{token}",
                                          preferences_url=f"{BASE_URL}/p/{token}",
                                          view_in_browser_url=f"{BASE_URL}/v/{token}")
        html, text = rendering.render_version(version, context)
        produced += len(html) + len(text)
    return time.perf_counter() - start, produced


def run_render_only(version, contexts):
    start = time.perf_counter()
    for context in contexts:
        rendering.render_version(version, context)
    return time.perf_counter() - start


def check_personalised(version, contacts):
    """Every copy carries its own recipient's name and links (the bench measures real work)."""
    for n in (0, 1, len(contacts) - 1):
        context = rendering.build_context(ACCOUNT, contacts[n], unsubscribe_url=f"{BASE_URL}/u/{n:x}",
                                          preferences_url=f"{BASE_URL}/p/{n:x}",
                                          view_in_browser_url=f"{BASE_URL}/v/{n:x}")
        html, text = rendering.render_version(version, context)
        for part in (html, text):
            assert contacts[n]["first_name"] in part and f"{BASE_URL}/u/{n:x}" in part, "render not personalised"
            assert "{{" not in part and "{%" not in part, "merge tags left unrendered"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--template", default=os.path.join(ROOT, "nudge", "gallery", "newsletter.json"))
    parser.add_argument("--contacts", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    doc = load_document(args.template)
    compile_seconds, compiled = time_compile(doc)
    jinja_seconds = time_jinja_compile(compiled)
    version = SimpleNamespace(id=uuid.uuid4(), content_html=compiled.html, content_text=compiled.text)
    contacts = make_contacts(args.contacts)
    check_personalised(version, contacts)

    print(f"template: {os.path.relpath(args.template, ROOT)}  compiled HTML {len(compiled.html.encode()) / 1024:.1f} KB, "
          f"text {len(compiled.text.encode()) / 1024:.1f} KB, warnings: {[w['code'] for w in compiled.warnings]}")
    print(f"one-time compile (blocks -> MJML -> HTML, checks, text part, warnings): {compile_seconds * 1000:.1f} ms")
    print(f"one-time Jinja compile of a version (cache miss): {jinja_seconds * 1000:.1f} ms")

    timings, produced = [], 0
    for _ in range(args.runs):
        seconds, produced = run_once(version, contacts)
        timings.append(seconds)
    contexts = [rendering.build_context(ACCOUNT, contact, unsubscribe_url=f"{BASE_URL}/u/x",
                                        preferences_url=f"{BASE_URL}/p/x", view_in_browser_url=f"{BASE_URL}/v/x")
                for contact in contacts]
    render_only = statistics.median(run_render_only(version, contexts) for _ in range(args.runs))

    seconds = statistics.median(timings)
    rate = len(contacts) / seconds
    print(f"{len(contacts):,} contacts, {args.runs} runs, one core: {rate:,.0f} personalised renders/s "
          f"({seconds / len(contacts) * 1e6:.1f} µs each: context + HTML + text; "
          f"{produced / len(contacts) / 1024:.1f} KB out per recipient)")
    print(f"render only (context built beforehand): {len(contacts) / render_only:,.0f}/s "
          f"({render_only / len(contacts) * 1e6:.1f} µs each)")
    print(f"target >= 5,000/s: {'met' if rate >= 5000 else 'MISSED'}")


if __name__ == "__main__":
    main()
