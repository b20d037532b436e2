"""`havenet`: the one command line of hub, node, de-identification and demo."""

from __future__ import annotations

import logging

import typer

from common.deid import cli as deid_cli
from compose import demo
from hub.cli import hub_app
from node.cli import node_app
from ontology.cli import ontology_app

app = typer.Typer(
    help="havenet: federated, privacy-first sharing of hospital images and records.",
    no_args_is_help=True,
    add_completion=False,
)
app.command("deid")(deid_cli.deid)
app.command("secret")(deid_cli.new_secret)
app.command("profile")(deid_cli.check_profile)
app.command("demo")(demo.demo)
app.add_typer(hub_app, name="hub")
app.add_typer(node_app, name="node")
app.add_typer(ontology_app, name="ontology")


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    quiet_libraries()
    app()


def quiet_libraries() -> None:
    """pydicom's messages quote element values ("Invalid value for VR PN: '...'"), which
    may be a patient's name: they never reach havenet's logs."""
    logging.getLogger("pydicom").setLevel(logging.CRITICAL + 1)
