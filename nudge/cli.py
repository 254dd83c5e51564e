"""The `nudge` command: Flask's CLI over create_app plus NudgeCampaign's own commands."""
from flask.cli import FlaskGroup

from nudge import create_app


def _create_app():
    return create_app()


cli = FlaskGroup(create_app=_create_app, help="NudgeCampaign: self-hostable email marketing.")


def main():
    cli(prog_name="nudge")
