"""The `kai-flows` command line. Each area registers its commands from its own module."""

from __future__ import annotations

import typer

from kai_flows.cli import build, demo, engine, images, ledger, lint, submit

app = typer.Typer(
    name="kai-flows",
    help="Photo-to-3D pipelines as Argo Workflows: compile, lint, run locally, submit, deploy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (build, engine, demo, images, lint, submit, ledger):
    module.register(app)


def main() -> None:
    app()
