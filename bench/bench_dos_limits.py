"""Cheap requests that used to cost a lot (issue 14, section 2): the figures before and after the limits.

    .venv/bin/python bench/bench_dos_limits.py                    # this tree
    .venv/bin/python bench/bench_dos_limits.py --source OLD_TREE  # another checkout (e.g. the code before)

Prints the seconds each case takes in the tree measured:
  * the segment builder's form parser on a 27 KB form of 1,500 nodes and on a 500 KB form
    (called directly: Werkzeug's 1,000-field form limit stops the larger one at the HTTP layer);
  * the merge-tag scan on 16 KB of unclosed "{{" (the regex before, the linear scan after);
  * the whole template check (compile_template) on 16 KB of unclosed "<!--" and of unclosed "{{";
  * a runaway template's trial render (a loop of 3,000 replaces of a 960,000-character string),
    through rendering.preview as POST /api/v1/templates/render runs it.
Each case stops after --timeout seconds (then shown as "> N s"); a refusal shows its message.
To measure "before", check the old code out first:
    git worktree add /tmp/nudge-before ada294b && .venv/bin/python bench/bench_dos_limits.py --source /tmp/nudge-before
"""
import argparse
import multiprocessing
import os
import re
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOOTER = '<p>{{ account.postal_address }} <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>'
MERGE_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)  # the scan before issue 14
RUNAWAY = ('{% set s = "x" * 10000 %}{% set s = ' + "s~" * 95 + "s %}"
           '{% for a in "x" * 3000 %}{% if (s | replace("x", "y")) | length > 5 %}{% endif %}{% endfor %}' + FOOTER)


def builder_form(nodes):
    """A builder form of `nodes` empty groups side by side (one <id>-kind field each, as a crafted request
    would send): before, each group scanned every key of the form for its children."""
    from werkzeug.datastructures import MultiDict
    return MultiDict([("r-kind", "group")] + [(f"r-{i}-kind", "group") for i in range(nodes)])


def form_of_size(size):
    form, nodes, length = builder_form(0), 0, len("r-kind=group")
    while length < size:
        form.add(f"r-{nodes}-kind", "group")
        length += len(f"&r-{nodes}-kind=group")
        nodes += 1
    return form, nodes


def app_and_account():
    instance = tempfile.mkdtemp(prefix="nudge-bench-")
    os.environ["NUDGE_INSTANCE_PATH"] = instance
    from nudge import create_app
    from nudge.extensions import db
    from nudge.services import accounts
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{instance}/bench.db", "TESTING": True})
    with app.app_context():
        db.create_all()
        account, _ = accounts.create_account(name="Bench", email="bench@example.com", password="Bench-Password-42!",
                                             plan="starter", owner_name="Bench")
        return app, account.id


def case_form(size_or_nodes):
    from nudge.blueprints.segments import conditions_from_form
    app, account_id = app_and_account()
    if size_or_nodes == "27kb":
        form, nodes = builder_form(1500), 1500  # 25 KB
    else:
        form, nodes = form_of_size(500 * 1024)
    with app.test_request_context():
        start = time.perf_counter()
        try:
            conditions_from_form(form, account_id)
            outcome = "parsed"
        except Exception as exc:  # noqa: BLE001 - the refusal is the outcome
            outcome = f"refused: {getattr(exc, 'message', exc)}"
        return time.perf_counter() - start, f"{nodes:,} nodes; {outcome}"


def case_merge_scan(_):
    text = "{{" * 8000
    try:
        from nudge.services.email_doc import merge_tag_spans
    except ImportError:
        start = time.perf_counter()
        found = len(MERGE_TAG.findall(text))
        return time.perf_counter() - start, f"regex, {found} tags"
    start = time.perf_counter()
    found = len(merge_tag_spans(text))
    return time.perf_counter() - start, f"linear scan, {found} tags"


def compile_case(body):
    def run(_):
        from nudge.services import rendering
        start = time.perf_counter()
        try:
            rendering.compile_template(html=body + FOOTER)
            outcome = "compiled"
        except Exception as exc:  # noqa: BLE001
            outcome = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"[:110]
        return time.perf_counter() - start, outcome
    return run


def case_runaway(_):
    from nudge.services import rendering
    start = time.perf_counter()
    try:
        rendering.preview(None, html=RUNAWAY, base_url="https://example.com")
        outcome = "rendered"
    except Exception as exc:  # noqa: BLE001
        outcome = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"[:110]
    return time.perf_counter() - start, outcome


CASES = [
    ("segment form, 27 KB / 1,500 nodes", case_form, "27kb"),
    ("segment form, 500 KB", case_form, "500kb"),
    ("merge-tag scan, 16 KB of unclosed {{", case_merge_scan, None),
    ("compile, 16 KB of unclosed {{", compile_case("<p>" + "{{" * 8000 + "</p>"), None),
    ("compile, 16 KB of unclosed <!--", compile_case("<!--" * 4000), None),
    ("runaway template, trial render", case_runaway, None),
]


def _child(source, index, queue):
    sys.path.insert(0, source)
    _, function, argument = CASES[index]
    queue.put(function(argument))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=ROOT, help="the nudge source tree to measure (default: this one)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds before a case is stopped")
    args = parser.parse_args()
    source = os.path.abspath(args.source)
    print(f"tree: {source}")
    context = multiprocessing.get_context("spawn")  # each case in a fresh process importing that tree
    for index, (label, _, _) in enumerate(CASES):
        queue = context.Queue()
        child = context.Process(target=_child, args=(source, index, queue))
        child.start()
        child.join(args.timeout)
        if child.is_alive():
            child.terminate()
            child.join()
            print(f"{label:42} > {args.timeout:.0f} s (stopped)")
            continue
        if queue.empty():
            print(f"{label:42} failed (exit code {child.exitcode})")
            continue
        seconds, outcome = queue.get()
        print(f"{label:42} {seconds:8.3f} s  {outcome}")


if __name__ == "__main__":
    main()
