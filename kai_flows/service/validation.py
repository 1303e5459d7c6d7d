"""A job request checked before it is queued: pipeline, typed parameters, tier, queue, quality tier, inputs.

The pipelines' own declarations (kai_flows.pipelines) are the truth: a parameter must be one the pipeline
declares and its value must validate against the declared type; every required parameter and input must be
given (an input by a parameter of its name, or by `input_uri`). Whatever the request gets wrong comes back as
one line naming the field, before anything reaches the ledger.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from pydantic import TypeAdapter, ValidationError

from kai_flows.pipeline import Pipeline, PipelineError
from kai_flows.policy import Policy, PolicyError
from kai_flows.service.config import CoordinatorConfig
from kai_flows.service.schemas import JobRequest
from kai_flows.tenancy import TenancyError, check_input_key, check_tenant


class RequestInvalid(ValueError):
    """The request names something unknown or gives a value of the wrong type; the message names the field."""


@cache
def _pipeline(name: str) -> Pipeline:
    from kai_flows.pipelines import PIPELINES

    try:
        return PIPELINES[name]()
    except KeyError:
        raise RequestInvalid(f"pipeline: unknown pipeline {name!r}; known: {', '.join(sorted(PIPELINES))}") from None


@cache
def _adapter(tp: Any) -> TypeAdapter[Any]:
    return TypeAdapter(tp)


def check_request(req: JobRequest, config: CoordinatorConfig, policy: Policy | None = None) -> None:
    try:
        check_tenant(req.tenant)
    except TenancyError as e:
        raise RequestInvalid(f"tenant: {e}") from None
    try:
        pipeline = _pipeline(req.pipeline)
    except PipelineError as e:
        raise RequestInvalid(f"pipeline {req.pipeline!r}: {e}") from None
    _check_parameters(req, pipeline)
    policy = policy or config.policy()
    try:
        tier = policy.tier(req.tier)
        if req.queue is not None:
            policy.queue(req.queue)
    except PolicyError as e:
        raise RequestInvalid(str(e)) from None
    quality = req.parameters.get("quality_tier")
    if quality is not None and quality not in (allowed := config.allowed_quality(tier.name)):
        raise RequestInvalid(f"parameters.quality_tier: tier {tier.name!r} may ask for {', '.join(allowed)}, "
                             f"not {quality!r}")
    for what, key in _input_keys(req):
        try:
            check_input_key(req.tenant, what, key)
        except TenancyError as e:
            raise RequestInvalid(str(e)) from None


def _check_parameters(req: JobRequest, pipeline: Pipeline) -> None:
    known = set(pipeline.params) | set(pipeline.inputs)
    for name, value in req.parameters.items():
        if name not in known:
            raise RequestInvalid(f"parameters.{name}: pipeline {pipeline.name!r} has no such parameter; it takes "
                                 f"{', '.join(sorted(known))}")
        if name in pipeline.inputs:
            if not isinstance(value, str) or not value:
                raise RequestInvalid(f"parameters.{name}: an input's S3 key (a non-empty string)")
            continue
        try:
            _adapter(pipeline.params[name].type).validate_python(value)
        except ValidationError as e:
            raise RequestInvalid(f"parameters.{name}: {value!r} is not valid: {e.errors()[0]['msg']}") from None
    missing = [p.name for p in pipeline.params.values() if p.default is None and p.name not in req.parameters]
    missing += [i for i in pipeline.inputs if i not in req.parameters]
    if len(missing) > 1 or (missing and req.input_uri is None):
        raise RequestInvalid(f"pipeline {pipeline.name!r} needs {', '.join(missing)}: give "
                             f"{'them' if len(missing) > 1 else 'it'} in parameters"
                             + (" (input_uri can give one input)" if req.input_uri is None else ""))


def _input_keys(req: JobRequest) -> list[tuple[str, str]]:
    """(field, S3 key) of every input the request names in S3: the tenant may read only its own uploads."""
    pipeline = _pipeline(req.pipeline)
    keys = [(f"parameters.{n}", str(req.parameters[n])) for n in pipeline.inputs if n in req.parameters]
    uri = (req.input_uri or "").strip()
    if uri.startswith("{"):
        try:
            mapping = json.loads(uri)
        except ValueError as e:
            raise RequestInvalid(f"input_uri: not a JSON object: {e}") from None
        if not isinstance(mapping, dict):
            raise RequestInvalid("input_uri: a JSON object {input: S3 key}")
        keys += [(f"input_uri.{k}", _key(str(v))) for k, v in mapping.items()]
    elif uri.startswith("s3://"):
        keys.append(("input_uri", _key(uri)))
    return [(what, key.strip("/")) for what, key in keys if not key.startswith("/")]  # local folders: the runner's


def warm_up() -> None:
    """Build every pipeline's declarations now, not in the first requests."""
    from kai_flows.pipelines import PIPELINES

    for name in PIPELINES:
        _pipeline(name)


def _key(uri: str) -> str:
    return uri.removeprefix("s3://").partition("/")[2] if uri.startswith("s3://") else uri
