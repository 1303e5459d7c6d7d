"""The step entry point every compiled container runs (design contract 2).

    python -m kai_flows.entrypoint kai_steps.quality:assess_image \
        --param name={{inputs.parameters.name}} \
        --artifact images={{inputs.artifacts.images.path}} \
        --artifact report={{outputs.artifacts.report.path}} \
        --output verdict={{outputs.parameters.verdict.path}}

Argo fills the variables in a pod; the local engine fills them with folders of its own. The entry point
validates every parameter with pydantic, calls the plain function, writes output parameters to their files and
prints the returned model as JSON on stdout (Argo's `outputs.result`). The step's own prints go to stderr so
stdout stays parseable. Output artifacts are written to a staging path and moved into place only when the step
succeeds, so a failed step never leaves a half-written output behind.

Exit codes: 0 success, 2 bad invocation or parameters (one line on stderr), 1 the step failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args, get_origin

from pydantic import TypeAdapter, ValidationError

from kai_flows.step import ENTRYPOINT_COMMAND, StepInfo, serialise_output, step_info

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# Failures in these classes are about the data the step was given: a one-line reason is the useful report.
EXPECTED_ERRORS = (ValueError, LookupError, OSError)


class InvocationError(Exception):
    """The step was called wrongly: unknown step, missing or invalid parameter, missing input."""


def load_step(ref: str) -> StepInfo:
    module_name, sep, func_name = ref.partition(":")
    if not sep or not module_name or not func_name:
        raise InvocationError(f"step reference {ref!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise InvocationError(f"cannot import step module {module_name!r}: {e}") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise InvocationError(f"step module {module_name!r} has no function {func_name!r}")
    try:
        return step_info(func)
    except TypeError as e:
        raise InvocationError(str(e)) from None


def _is_stringy(annotation: Any) -> bool:
    if annotation is str:
        return True
    if get_origin(annotation) is Literal:
        return all(isinstance(a, str) for a in get_args(annotation))
    return False


def parse_param(name: str, annotation: Any, raw: str) -> Any:
    """Convert Argo's string value to the annotated type: strings as they are, anything else as JSON."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    try:
        if _is_stringy(annotation):
            return adapter.validate_python(raw)
        try:
            return adapter.validate_json(raw)
        except ValidationError:
            return adapter.validate_strings(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise InvocationError(f"parameter {name!r}: {err['msg']} (got {raw!r})") from None


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InvocationError(f"{flag} {item!r} must look like NAME=VALUE")
        if name in pairs:
            raise InvocationError(f"{flag} {name!r} given twice")
        pairs[name] = value
    return pairs


def build_call(info: StepInfo, params: dict[str, str], artifacts: dict[str, str]) -> dict[str, Any]:
    """Keyword arguments for the step function, validated against its signature."""
    known_params = {p.name: p for p in info.params}
    for name in params:
        if name not in known_params:
            raise InvocationError(f"step {info.name}: unknown parameter {name!r}; it takes {sorted(known_params)}")
    known_artifacts = {a.name for a in info.inputs + info.outputs}
    for name in artifacts:
        if name not in known_artifacts:
            raise InvocationError(f"step {info.name}: unknown artifact {name!r}; it has {sorted(known_artifacts)}")
    kwargs: dict[str, Any] = {}
    for p in info.params:
        if p.name in params:
            kwargs[p.name] = parse_param(p.name, p.annotation, params[p.name])
        elif p.required:
            raise InvocationError(f"step {info.name}: missing parameter {p.name!r}")
    for a in info.inputs:
        raw = artifacts.get(a.name)
        if raw is None:
            if not a.optional:
                raise InvocationError(f"step {info.name}: missing input artifact {a.name!r}")
            kwargs[a.name] = None
            continue
        path = Path(raw)
        if not path.exists():
            if not a.optional:
                raise InvocationError(f"step {info.name}: input artifact {a.name!r} not found at {path}")
            kwargs[a.name] = None
            continue
        kwargs[a.name] = path
    for a in info.outputs:
        if a.name not in artifacts:
            raise InvocationError(f"step {info.name}: missing output artifact path {a.name!r}")
    return kwargs


def _staging_path(final: Path) -> Path:
    return final.parent / f".{final.name}.kai-staging"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def run_step(
    info: StepInfo, params: dict[str, str], artifacts: dict[str, str], outputs: dict[str, str]
) -> dict[str, Any] | None:
    """Validate, call the function with staged outputs, publish on success. Returns the model as a dict."""
    kwargs = build_call(info, params, artifacts)
    for name in outputs:
        if name not in info.output_params:
            known = list(info.output_params)
            raise InvocationError(f"step {info.name}: unknown output parameter {name!r}; it has {known}")
    finals = {a.name: Path(artifacts[a.name]) for a in info.outputs}
    staged = {name: _staging_path(p) for name, p in finals.items()}
    for name, path in staged.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove(path)
        kwargs[name] = path
    try:
        with contextlib.redirect_stdout(sys.stderr):
            result = info.func(**kwargs)
        missing = [a.name for a in info.outputs if not a.optional and not staged[a.name].exists()]
        if missing:
            raise RuntimeError(f"step {info.name} finished without writing output artifact(s) {missing}")
    except BaseException:
        for path in staged.values():
            _remove(path)
        raise
    for name, path in staged.items():
        if path.exists():
            _remove(finals[name])
            os.replace(path, finals[name])
    data = result.model_dump(mode="json") if result is not None else None
    for name, file in outputs.items():
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        Path(file).write_text(serialise_output(getattr(result, name)))
    return data


def _fail(code: int, message: str) -> NoReturn:
    print(f"kai-step: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=" ".join(ENTRYPOINT_COMMAND), description="Run one kai-flows step.")
    parser.add_argument("step", help="module:function of the step")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--artifact", action="append", default=[], metavar="NAME=PATH")
    parser.add_argument("--output", action="append", default=[], metavar="NAME=PATH",
                        help="file that receives an output parameter")
    args = parser.parse_args(argv)
    try:
        info = load_step(args.step)
        result = run_step(info, _pairs(args.param, "--param"), _pairs(args.artifact, "--artifact"),
                          _pairs(args.output, "--output"))
    except InvocationError as e:
        _fail(EXIT_BAD_INPUT, str(e))
    except KeyboardInterrupt:
        _fail(130, f"step {args.step} interrupted")
    except EXPECTED_ERRORS as e:
        if os.environ.get("KAI_DEBUG"):
            traceback.print_exc()
        _fail(EXIT_FAILED, f"step {args.step} failed: {type(e).__name__}: {e}")
    except Exception as e:  # an unexpected bug: keep the traceback for whoever debugs it
        traceback.print_exc()
        _fail(EXIT_FAILED, f"step {args.step} failed: {type(e).__name__}: {e}")
    if result is not None:
        print(json.dumps(result, separators=(",", ":"), sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
