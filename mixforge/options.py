"""What every `mixforge` command shares: its options and how it reports a user error.

A user error (a missing input, an unknown format, a bad config, a refused query, a bad parameter) ends
in one `error:` line naming the problem and the fix, with exit status 2; `mixforge --debug` shows the
traceback instead. A run that stopped on units failing for the environment's reasons (network,
credentials: flows.engine.UnitsFailed, or such an error outside a unit) ends in one summary naming them,
with exit status 1.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click
from typer.core import TyperGroup

if TYPE_CHECKING:
    from pydantic import BaseModel

# The exceptions that mean the user's input was wrong, by module: looked up only in modules already
# imported (an exception of a module never imported cannot have been raised), so the CLI stays light.
USER_ERRORS = (("operators.reader", "InputNotFound"), ("operators.reader", "UnknownFormat"),
               ("flows.config", "ConfigError"), ("storage.shards", "RunMismatch"),
               ("storage.catalog", "QueryRefused"))
RUN_FAILURES = (("flows.engine", "UnitsFailed"),)
DEBUG = False  # `mixforge --debug`: tracebacks for user errors too
# Without --verbose a healthy run prints progress bars and its summary only (Ray: flows.engine.init_ray).
QUIET_ENVIRONMENT = {
    "PREFECT_LOGGING_LEVEL": "WARNING",  # flow/task state lines, the temporary server's start and stop
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # else an ERROR line wherever telemetry cannot be sent
    "TRANSFORMERS_VERBOSITY": "error",  # the distiller's load report ("UNEXPECTED" keys: position_ids)
}

SERVICE_COMMANDS = ("up", "down")  # they start and stop the services the other commands use

RayAddress = Annotated[str | None, typer.Option(
    "--ray-address", envvar="RAY_ADDRESS",
    help="Ray cluster to run on, e.g. ray://head:10001 or head:6379 (default: the config's, else an embedded "
         "local Ray).")]
RunDir = Annotated[str, typer.Option("--out", "-o", help="Run directory; rerun with the same one to resume.")]
Progress = Annotated[bool, typer.Option(help="Show a progress bar per stage.")]
Restart = Annotated[bool, typer.Option(
    "--restart", help="Redo the stages of --out that were made from other inputs, config or code (without it, "
                      "such a rerun is refused).")]


def global_options(
    ctx: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show the traceback behind an error message."),
    verbose: bool = typer.Option(False, "--verbose", help="Show every log line of Ray, Prefect and the models, "
                                                          "warnings included (default: progress and summary)."),
) -> None:
    """Options before the command: `mixforge --debug ingest ...`."""
    global DEBUG
    DEBUG = debug
    if verbose:
        os.environ["MIXFORGE_VERBOSE"] = "1"  # read where Ray starts (flows.engine), inherited by its workers
    elif not os.environ.get("MIXFORGE_VERBOSE"):
        for name, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        for name in ("prefect.flow_runs", "prefect.task_runs"):
            logging.getLogger(name).addFilter(_reported_by_the_cli)
    if ctx.invoked_subcommand not in SERVICE_COMMANDS:
        from mixforge.services import use_running

        use_running()  # what `mixforge up` started, unless RAY_ADDRESS or PREFECT_API_URL say otherwise


def _reported_by_the_cli(record: logging.LogRecord) -> bool:
    """Drop Prefect's tracebacks for what the CLI reports in one line itself (a user error, a transient
    failure, a run whose units failed on them; a bug keeps its traceback), and its failed-state lines, as
    the CLI reports every failure."""
    error = record.exc_info[1] if record.exc_info else None
    if error is not None:
        return not (is_one_of(error, USER_ERRORS) or is_one_of(error, RUN_FAILURES) or _transient(error))
    return not record.getMessage().startswith("Finished in state Failed(")


def print_summary(out: str | Path) -> None:
    """The run's summary from its manifest (the flows log theirs, which a quiet run does not show)."""
    from storage.manifest import describe, load_manifest

    manifest = load_manifest(out)
    if manifest is not None:
        typer.echo(describe(manifest))


def is_one_of(error: BaseException, kinds: tuple[tuple[str, str], ...]) -> bool:
    return any(isinstance(error, cls) for module, name in kinds
               if (cls := getattr(sys.modules.get(module), name, None)) is not None)


class CommandGroup(TyperGroup):
    """The `mixforge` group: a command's user error becomes one line and exit status 2, not a traceback."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as error:  # a bad parameter, a missing argument, an unknown command
            if DEBUG or isinstance(error, NoArgsIsHelpError):
                raise
            where = error.ctx.command_path if error.ctx else ctx.command_path
            fail(f"{error.format_message()} (see `{where} --help`)")
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as error:
            if DEBUG:
                raise
            if is_one_of(error, USER_ERRORS):
                fail(error)
            if is_one_of(error, RUN_FAILURES):
                fail(error, status=1)
            if _transient(error):
                fail(f"{type(error).__name__}: {error} (a network, throttling or credentials problem, not the "
                     "input's: fix it and rerun the same command; finished units are kept)", status=1)
            raise


def _transient(error: BaseException) -> bool:
    reader = sys.modules.get("operators.reader")  # the one classification of transient errors
    return reader is not None and reader.is_transient(error)


def fail(error: Exception | str, status: int = 2) -> NoReturn:
    """One `error:` line per line of the message on stderr, exit status 2: the user's input was wrong."""
    if DEBUG and sys.exc_info()[0] is not None:
        traceback.print_exc()
    for line in str(error).splitlines() or [""]:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(status)


def yaml_mapping(config: Path, expected: str = "a YAML mapping") -> dict:
    """A config file's top-level mapping; a missing file, bad YAML or another shape is the user's error."""
    from flows.config import ConfigError, read_yaml

    if not config.exists():
        fail(f"no config file at {config}")
    try:
        data = read_yaml(config.read_text(), str(config))[0] or {}
    except ConfigError as error:
        fail(error)
    if not isinstance(data, dict):
        fail(f"{config} must be {expected}")
    return data


def load_sections(config: Path, sections: dict[str, type[BaseModel]]) -> dict[str, BaseModel]:
    """The named sections of a YAML config (a whole pipeline config works too, its other sections unread),
    checked as curate's config is: an unknown key, at the top level or in a section, or a bad value is one
    line with its line number (and the keys allowed there), exit status 2. A missing section: its defaults."""
    from pydantic import ConfigDict, create_model

    from flows.pipeline import PipelineConfig

    fields: dict[str, Any] = {name: (Any, None) for name in PipelineConfig.model_fields}
    fields.update({name: (model | None, None) for name, model in sections.items()})
    parsed = _parse(config, create_model("ConfigFile", __config__=ConfigDict(extra="forbid"), **fields))
    return {name: getattr(parsed, name) or model() for name, model in sections.items()}


def load_section(config: Path, name: str, model: type[BaseModel]) -> BaseModel:
    """The `name:` section of a YAML config, or the whole file if it has no such key, checked as
    `load_sections` checks."""
    if name in yaml_mapping(config):
        return load_sections(config, {name: model})[name]
    return _parse(config, model)


def _parse(config: Path, model: type[BaseModel]) -> BaseModel:
    from flows.config import ConfigError, parse_config

    if not config.is_file():
        fail(f"no config file at {config}")
    try:
        return parse_config(config.read_text(), source=str(config), model=model)
    except ConfigError as error:
        fail(error)
