"""What every `mixforge` command that runs a flow shares: its options and how it reports a user error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

RayAddress = Annotated[str | None, typer.Option(
    "--ray-address", envvar="RAY_ADDRESS",
    help="Ray cluster to run on, e.g. ray://head:10001 or head:6379 (default: the config's, else an embedded "
         "local Ray).")]
RunDir = Annotated[str, typer.Option("--out", "-o", help="Run directory; rerun with the same one to resume.")]
Progress = Annotated[bool, typer.Option(help="Show a progress bar per stage.")]


def fail(error: Exception | str) -> NoReturn:
    """One `error:` line per line of the message on stderr, exit status 2: the user's input was wrong."""
    for line in str(error).splitlines() or [""]:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(2)


def yaml_mapping(config: Path, expected: str = "a YAML mapping") -> dict:
    """A config file's top-level mapping; a missing file or another shape is the user's error."""
    import yaml

    if not config.exists():
        fail(f"no config file at {config}")
    data = yaml.safe_load(config.read_text()) or {}
    if not isinstance(data, dict):
        fail(f"{config} must be {expected}")
    return data
