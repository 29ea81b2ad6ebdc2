"""The one CLI, `mixforge`. Command modules live in mixforge/commands and register themselves here."""

from __future__ import annotations

import importlib
import pkgutil

import typer

from mixforge import commands
from mixforge.options import CommandGroup, global_options

app = typer.Typer(
    name="mixforge",
    help="Curate pre-training corpora into Parquet shards, inspect them with SQL, and run data-mixture experiments.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=CommandGroup,
)
app.callback(cls=CommandGroup)(global_options)

for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
    importlib.import_module(f"{commands.__name__}.{module_info.name}").register(app)


if __name__ == "__main__":
    app()
