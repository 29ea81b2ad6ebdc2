"""Start a deployed flow from the dashboard through the Prefect API, and follow its run's state.

The form comes from the deployment's own parameter schema, so it follows the flow's signature as it
changes: a parameter that is a pydantic model (`mixture_experiment`'s ExperimentConfig) is flattened into
one widget per field, `corpus.by`, `materialize.budget_tokens`, ..., with the model's defaults.
`mixforge ui` brings a local server serving `mixture_experiment` when none is configured
(dashboards/local_prefect.py); without a reachable server or deployment the caller gets
PrefectUnavailable, one line that says which and what to do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import streamlit as st

FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


class PrefectUnavailable(RuntimeError):
    """No server, an unreachable one, or no deployment of the flow; the message says which."""


class ParameterError(ValueError):
    """A form value that cannot be the parameter it is for; the message names the parameter."""


@dataclass
class Deployment:
    name: str  # "flow/deployment", as run_deployment spells it
    id: UUID
    defaults: dict[str, Any] = field(default_factory=dict)
    schema: dict[str, dict] = field(default_factory=dict)  # parameter -> its JSON schema
    required: list[str] = field(default_factory=list)
    definitions: dict[str, dict] = field(default_factory=dict)  # the models the schemas' $refs name


@dataclass
class FormField:
    """One widget: a parameter, or a field of a model parameter at `path` (("config", "corpus", "by"))."""

    path: tuple[str, ...]
    schema: dict
    default: Any
    required: bool

    @property
    def key(self) -> str:
        return ".".join(self.path)

    @property
    def label(self) -> str:
        """The field's name inside its parameter (`corpus.by`), or the parameter's."""
        return ".".join(self.path[1:] or self.path)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:300]


def find_deployments(flow_name: str) -> list[Deployment]:
    """Deployments of `flow_name` on the configured Prefect server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.settings import PREFECT_API_URL

    api = PREFECT_API_URL.value()
    if not api:
        raise PrefectUnavailable(f"No Prefect server configured (PREFECT_API_URL is not set): start the dashboard "
                                 f"with `mixforge ui RUN`, which serves `{flow_name}` on a local Prefect server.")
    try:
        with get_client(sync_client=True) as client:
            unhealthy = client.api_healthcheck()
            if unhealthy is not None:
                raise PrefectUnavailable(f"The Prefect server at {api} is not reachable: {_one_line(unhealthy)}")
            found = [d for d in client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
                     if not d.paused]  # a paused one is no longer served (its dashboard stopped)
    except PrefectUnavailable:
        raise
    except Exception as error:  # the server's or the network's failure, whatever its class
        raise PrefectUnavailable(f"The Prefect server at {api} did not answer: {_one_line(error)}") from None
    if not found:
        raise PrefectUnavailable(f"The Prefect server at {api} has no active deployment of `{flow_name}`: deploy "
                                 "it first (`mixforge ui` without PREFECT_API_URL serves one itself).")
    return [Deployment(name=f"{flow_name}/{d.name}", id=d.id, defaults=dict(d.parameters or {}),
                       schema=dict((d.parameter_openapi_schema or {}).get("properties", {})),
                       required=list((d.parameter_openapi_schema or {}).get("required", [])),
                       definitions=dict((d.parameter_openapi_schema or {}).get("definitions", {})))
            for d in found]


def launch(deployment: Deployment, parameters: dict[str, Any]) -> UUID:
    """Create a flow run of the deployment with these parameters; its id."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            return client.create_flow_run_from_deployment(deployment.id, parameters=parameters).id
    except Exception as error:  # e.g. the server rejected the parameters
        raise PrefectUnavailable(f"Prefect refused the run: {_one_line(error)}") from None


def flow_run_state(run_id: UUID) -> tuple[str, str]:
    """(state type, state name) of a flow run, e.g. ("RUNNING", "Running")."""
    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)
    except Exception as error:
        raise PrefectUnavailable(f"Could not read the flow run's state: {_one_line(error)}") from None
    if run.state is None:
        return "PENDING", "Pending"
    return run.state.type.value, run.state.name


def ui_link(run_id: UUID) -> str | None:
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    return f"{ui}/runs/flow-run/{run_id}" if ui else None


def _kind(schema: dict) -> str:
    """The JSON type of a parameter; Optional[X] (anyOf X, null) counts as X."""
    if "type" in schema:
        return schema["type"]
    kinds = [s.get("type") for s in schema.get("anyOf", []) if s.get("type") not in (None, "null")]
    return kinds[0] if len(kinds) == 1 else "json"


_MISSING = object()  # no value at that path (None is a value)


def _lookup(values: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return _MISSING
        values = values[key]
    return values


def _model(schema: dict, definitions: dict[str, dict]) -> dict | None:
    """The object schema of a model parameter or field (through its $ref), or None for any other type."""
    ref = next((r["$ref"] for r in [schema, *schema.get("allOf", [])] if "$ref" in r), None)
    if ref is not None:
        return definitions.get(ref.rsplit("/", 1)[-1])
    return schema if "properties" in schema else None


def form_fields(deployment: Deployment, prefill: dict[str, Any] | None = None) -> list[FormField]:
    """The form's fields in order, each with what it shows first: the deployment's value, else the schema's
    default, else `prefill`'s value for its name (e.g. the run directory the dashboard shows)."""
    fields: list[FormField] = []

    def add(path: tuple[str, ...], schema: dict, required: bool) -> None:
        model = _model(schema, deployment.definitions)
        if model is not None:
            for name, sub in model["properties"].items():
                add((*path, name), sub, required and name in model.get("required", []))
            return
        default = _lookup(deployment.defaults, path)
        if default is _MISSING:
            default = schema.get("default", (prefill or {}).get(path[-1]))
        fields.append(FormField(path, schema, default, required))

    for name, schema in sorted(deployment.schema.items(), key=lambda item: item[1].get("position", 0)):
        add((name,), schema, name in deployment.required)
    return fields


def parameter_form(deployment: Deployment, key: str, prefill: dict[str, Any] | None = None) -> dict[str, Any]:
    """Widgets for the deployment's parameters (inside a form); their raw values by field key.

    `prefill` gives values for fields that have no default, by name (e.g. `run_dir`).
    """
    values: dict[str, Any] = {}
    for form_field in form_fields(deployment, prefill):
        schema, default, name = form_field.schema, form_field.default, form_field.key
        label = form_field.label + (" (required)" if form_field.required else "")
        help_text = schema.get("description")
        kind = _kind(schema)
        widget_key = f"{key}_{deployment.name}_{name}"
        if "enum" in schema:  # a Literal: its values to choose from, nothing chosen when it has no default
            options = list(schema["enum"])
            values[name] = st.selectbox(label, options, index=options.index(default) if default in options else None,
                                        help=help_text, key=widget_key)
        elif kind == "boolean":
            values[name] = st.checkbox(label, value=bool(default), help=help_text, key=widget_key)
        elif kind == "string":
            values[name] = st.text_input(label, value="" if default is None else str(default), help=help_text,
                                         key=widget_key)
        elif kind in ("integer", "number") and isinstance(default, int | float):
            step = 1 if kind == "integer" else None
            values[name] = st.number_input(label, value=default, step=step, help=help_text, key=widget_key)
        else:
            shown = "" if default is None else json.dumps(default)
            values[name] = st.text_input(f"{label} (JSON)", value=shown, help=help_text, key=widget_key)
    return values


def parse_parameters(deployment: Deployment, raw: dict[str, Any]) -> dict[str, Any]:
    """Form values as parameters: JSON decoded, empty fields left to the deployment's defaults (a model
    parameter is sent whole, the deployment's value with the form's on top, since Prefect replaces it whole)."""
    fields = {f.key: f for f in form_fields(deployment)}
    parameters: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:  # a choice left unmade
            continue
        form_field = fields[name]
        decoded = _decoded(form_field, value)
        if decoded is _MISSING:
            continue
        *parents, last = form_field.path
        holder = parameters
        for parent in parents:
            holder = holder.setdefault(parent, {})
        holder[last] = decoded
    for name in {f.path[0] for f in fields.values() if len(f.path) > 1} & set(parameters):  # model parameters
        parameters[name] = _merged(deployment.defaults.get(name) or {}, parameters[name])
    given = {**deployment.defaults, **parameters}
    missing = [f.key for f in fields.values() if f.required and _lookup(given, f.path) is _MISSING]
    if missing:
        raise ParameterError(f"required parameter(s) missing: {', '.join(missing)}")
    return parameters


def _decoded(form_field: FormField, value: Any) -> Any:
    """A widget's value as the parameter's (_MISSING: left empty)."""
    kind = _kind(form_field.schema)
    if isinstance(value, bool | int | float) or (kind == "string" and value != ""):
        return value
    if not str(value).strip():
        return _MISSING
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as error:
        raise ParameterError(f"parameter '{form_field.key}': not valid JSON ({error.msg}): {value[:80]}") from None
    if kind in ("integer", "number") and not isinstance(decoded, int | float):
        raise ParameterError(f"parameter '{form_field.key}' must be a number, got {value[:80]}")
    return decoded


def _merged(base: dict, top: dict) -> dict:
    """`top` over `base`, nested dicts merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        merged[key] = _merged(base[key], value) if nested else value
    return merged
