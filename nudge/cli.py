"""The `nudge` command: Flask's CLI over create_app (db, run, routes, shell) plus our own commands."""
import json
import logging
import os
import sys

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from nudge import create_app
from nudge.config import PLANS
from nudge.errors import DomainError


def _create_app():
    return create_app()


cli = FlaskGroup(create_app=_create_app, help="NudgeCampaign: self-hostable email marketing.")


def main():
    cli(prog_name="nudge")


def _fail(exc):
    """Print a domain error readably on stderr and exit non-zero."""
    lines = [exc.message] + [f"  {d.get('field')}: {d.get('issue')}" for d in exc.details if d.get("issue") != exc.message]
    click.echo("Error: " + "\n".join(lines), err=True)
    sys.exit(1)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
@click.option("--threads", default=8, show_default=True, type=int, help="Web server threads.")
@click.option("--workers", "-w", default=2, show_default=True, type=int, help="Embedded job worker threads.")
@with_appcontext
def serve(host, port, threads, workers):
    """Run the web app with an embedded job worker: the whole product in one process."""
    import atexit

    import waitress

    from nudge.tasks import start_embedded_consumer

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = current_app._get_current_object()
    if not os.environ.get("NUDGE_BASE_URL"):
        app.config["BASE_URL"] = local_base_url(host, port)
    consumer = start_embedded_consumer(app, workers=workers)
    atexit.register(consumer.stop, graceful=True)
    _stop_on_sigterm()
    click.echo(f"NudgeCampaign on http://{host}:{port}/ (database: {app.config['SQLALCHEMY_DATABASE_URI'].split(':')[0]}, "
               f"jobs: {'redis' if app.config['REDIS_URL'] else 'sqlite'}, embedded worker threads: {workers})")
    waitress.serve(app, host=host, port=port, threads=threads, ident="NudgeCampaign")


def local_base_url(host, port):
    """The URL of `nudge serve` on this machine, for links when NUDGE_BASE_URL is not set (`make run PORT=8080`)."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _stop_on_sigterm():
    """SIGTERM (docker stop, systemd, a supervisor) stops the server like Ctrl-C: waitress finishes its
    requests and the embedded worker its jobs, instead of the process dying mid-job."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


@cli.command("worker")
@click.option("--workers", "-w", default=2, show_default=True, type=int, help="Worker threads or processes.")
@click.option("--worker-type", "-k", default="thread", show_default=True, type=click.Choice(["thread", "process"]))
@click.option("--no-periodic", is_flag=True, help="Leave periodic tasks to another worker.")
@with_appcontext
def worker(workers, worker_type, no_periodic):
    """Run a Huey consumer for the background jobs."""
    from huey.consumer import Consumer

    from nudge.tasks import CONSUMER_OPTIONS, huey, resume_stalled_campaigns, use_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    use_app(current_app._get_current_object())
    # A worker that died left claims behind: look once they are stale, not only at the next minute.
    resume_stalled_campaigns()
    resume_stalled_campaigns.schedule(delay=current_app.config["SEND_CLAIM_TIMEOUT"] + 1)
    Consumer(huey, workers=workers, worker_type=worker_type, periodic=not no_periodic, **CONSUMER_OPTIONS).run()


@cli.command("create-account")
@click.option("--name", required=True, help="Account (business) name.")
@click.option("--email", required=True, help="The owner's sign-in email.")
@click.option("--password", required=True, help="The owner's password (12+ characters, mixed).")
@click.option("--plan", default="starter", show_default=True, type=click.Choice(PLANS))
@with_appcontext
def create_account(name, email, password, plan):
    """Create an account and its owner; prints {"account_id", "user_id"}."""
    from nudge.services import accounts
    try:
        account, owner = accounts.create_account(name=name, email=email, password=password, plan=plan)
    except DomainError as exc:
        _fail(exc)
    click.echo(json.dumps({"account_id": str(account.id), "user_id": str(owner.id)}))


@cli.command("create-api-client")
@click.option("--email", required=True, help="An owner or admin of the account the client belongs to.")
@click.option("--name", required=True, help="A name to recognise the client by.")
@click.option("--scopes", required=True, help='Space-separated, e.g. "contacts:read contacts:write".')
@with_appcontext
def create_api_client(email, name, scopes):
    """Create an OAuth client; prints {"client_id", "client_secret"} (the secret is shown only now)."""
    from nudge.extensions import db
    from nudge.models import User
    from nudge.services import api_clients
    from nudge.services.validation import normalize_email
    try:
        user = db.session.scalar(sa.select(User).where(User.email == normalize_email(email)))
        if user is None:
            click.echo(f"Error: no user with the email {email}.", err=True)
            sys.exit(1)
        client, secret = api_clients.create_api_client(user, name=name, scopes=scopes)
    except DomainError as exc:
        _fail(exc)
    click.echo(json.dumps({"client_id": client.client_id, "client_secret": secret}))


@cli.command("housekeeping")
@with_appcontext
def housekeeping():
    """Run the retention clean-up now (it also runs every 15 minutes in a worker)."""
    from nudge.services.housekeeping import run_housekeeping
    click.echo(json.dumps(run_housekeeping()))


@cli.command("import-contacts")
@click.option("--email", required=True, help="The account owner's (or an admin's / marketer's) sign-in email.")
@click.option("--tags", default="", help="Comma-separated tags added to every imported contact.")
@click.option("--update", is_flag=True, help="Update contacts that already exist (default: skip them).")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@with_appcontext
def import_contacts(email, tags, update, file):
    """Import a CSV file of contacts (any size; columns mapped from the header like the dashboard does)."""
    from nudge.extensions import db
    from nudge.models import User
    from nudge.services import custom_fields, imports
    from nudge.services.validation import normalize_email
    try:
        user = db.session.scalar(sa.select(User).where(User.email == normalize_email(email)))
        if user is None:
            click.echo(f"Error: no user with the email {email}.", err=True)
            sys.exit(1)
        info = imports.inspect_file(file)
        mapping = imports.guess_mapping(info["header"], custom_fields.definitions(user.account_id))
        mapped = ", ".join(f"{column} -> {target}" for column, target in mapping.items() if target)
        click.echo(f"Columns: {mapped or 'none recognised'}", err=True)
        with click.progressbar(length=max(info["estimated_rows"], 1), label="Importing", file=sys.stderr,
                               show_pos=True) as bar:
            state = {"done": 0}

            def advance(processed):
                bar.update(min(processed, bar.length) - state["done"])
                state["done"] = min(processed, bar.length)

            imp = imports.import_file(user, file, mapping=mapping, update_existing=update, tags=tags,
                                      progress=advance)
    except DomainError as exc:
        _fail(exc)
    seconds = imports.elapsed_seconds(imp) or 0
    rate = f", {imp.processed_rows / seconds * 60:,.0f} rows/min" if seconds else ""
    click.echo(f"{imp.status}: {imp.processed_rows:,} rows in {seconds:.1f} s{rate} — created {imp.created_count:,}, "
               f"updated {imp.updated_count:,}, skipped {imp.skipped_count:,}, errors {imp.error_count:,} "
               f"(import {imp.id})")
    if imp.error_count:
        click.echo(f"Rows not imported: GET /api/v1/imports/{imp.id}/errors or the dashboard's Imports page.", err=True)
    if imp.status != "completed":
        click.echo(f"Error: {imp.message}", err=True)
        sys.exit(1)
