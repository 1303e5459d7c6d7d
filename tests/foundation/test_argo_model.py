"""The shared model of Argo (`kai_flows.argo`): `depends`, the task graph, quantities and durations, names.

Expected values come from Argo v3.7 and the Go/Kubernetes code it relies on: workflow/common/ancestry_test.go
(ANCESTRY), workflow/validate/validate.go (VALIDATE), Go's time/time_test.go parseDurationTests (GO),
k8s.io/apimachinery/pkg/api/resource/quantity.go (QTY), pkg/apis/workflow/v1alpha1/workflow_types.go NodeID and
workflow/util/pod_name.go (NAMES).
"""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal

import pytest

from kai_flows.argo import dag, names
from kai_flows.argo.depends import (
    ExpressionError,
    TaskState,
    depends_refs,
    depends_task_names,
    depends_tokens,
    evaluate_depends,
    expand_depends,
    task_depends,
)
from kai_flows.argo.units import parse_duration, parse_go_duration, parse_quantity

# ------------------------------------------------------------------------------------------------ depends

PLAIN = {f"task-{i}": TaskState("Pending") for i in (1, 2, 3)}


@pytest.mark.parametrize(("expr", "deps", "logic"), [
    # ANCESTRY TestGetTaskDependenciesFromDepends
    ("(task-1 || task-2.Succeeded) && !task-3.Succeeded", {"task-1", "task-2", "task-3"},
     "((task-1.Succeeded || task-1.Skipped || task-1.Daemoned) || task-2.Succeeded) && !task-3.Succeeded"),
    ("(task-1 || task-2.AnySucceeded) && !task-3.Succeeded", {"task-1", "task-2", "task-3"},
     "((task-1.Succeeded || task-1.Skipped || task-1.Daemoned) || task-2.AnySucceeded) && !task-3.Succeeded"),
    ("(task-1||(task-2.Succeeded || task-2.Failed))&&!task-3.Failed", {"task-1", "task-2", "task-3"},
     "((task-1.Succeeded || task-1.Skipped || task-1.Daemoned)||(task-2.Succeeded || task-2.Failed))&&!task-3.Failed"),
    ("(task-1 || task-1.Succeeded) && !task-1.Failed", {"task-1"},
     "((task-1.Succeeded || task-1.Skipped || task-1.Daemoned) || task-1.Succeeded) && !task-1.Failed"),
    ("task-1.Succeeded && task-1.AnySucceeded", {"task-1"}, "task-1.Succeeded && task-1.AnySucceeded"),
])
def test_task_names_and_expansion_as_ancestry_go(expr, deps, logic):
    assert depends_task_names(expr) == deps
    assert expand_depends(expr, PLAIN) == logic


@pytest.mark.parametrize(("flags", "logic"), [
    # ANCESTRY: continueOn adds Failed / Errored (Errored first) to a bare name's expansion
    ({"continue_on_failed": True}, "(task-1.Succeeded || task-1.Skipped || task-1.Daemoned || task-1.Failed)"),
    ({"continue_on_error": True}, "(task-1.Succeeded || task-1.Skipped || task-1.Daemoned || task-1.Errored)"),
    ({"continue_on_failed": True, "continue_on_error": True},
     "(task-1.Succeeded || task-1.Skipped || task-1.Daemoned || task-1.Errored || task-1.Failed)"),
])
def test_continue_on_expands_a_bare_name(flags, logic):
    assert expand_depends("task-1", {"task-1": TaskState("Pending", **flags)}) == logic


def test_validate_task_results():
    # ANCESTRY TestValidateTaskResults
    for ok in ("(task-1 || task-2.Succeeded) && !task-3",
               "((task-1.Succeeded || task-1.Failed) || task-2.Succeeded) && !task-3.Skipped && task-2.Failed "
               "|| task-6.Succeeded",
               "((task-1.Succeeded || task-1.Omitted) || task-2.Succeeded) && !task-3.Skipped && task-2.Failed "
               "|| task-6.Succeeded"):
        depends_task_names(ok)
    with pytest.raises(ExpressionError, match="task result 'DoeNotExist' for task 'task-1' is invalid"):
        depends_task_names("(task-1.DoeNotExist || task-2.Succeeded)")


def test_dependencies_list_reads_as_depends():
    # ANCESTRY TestGetTaskDependsLogic: `dependencies: [task-1, task-2]` is each name expanded, joined with &&
    task = {"name": "x", "dependencies": ["task-1", "task-2"]}
    assert task_depends(task) == "task-1 && task-2"
    assert expand_depends(task_depends(task), PLAIN) == (
        "(task-1.Succeeded || task-1.Skipped || task-1.Daemoned) && "
        "(task-2.Succeeded || task-2.Skipped || task-2.Daemoned)")
    # `depends` wins when it is a non-blank string; wrong types count as absent (lint reads invalid specs too)
    assert task_depends({"depends": "a.Failed", "dependencies": ["b"]}) == "a.Failed"
    assert task_depends({"depends": "  ", "dependencies": ["b", 3]}) == "b"
    assert task_depends({"depends": 7, "dependencies": "b"}) == ""


def test_operands_follow_task_name_regex():
    """taskNameRegex: a result starts with a capital; anything else between names is not an operand."""
    assert [(r.task, r.result) for r in depends_refs("a && (b.Failed || !c)")] == [
        ("a", None), ("b", "Failed"), ("c", None)]
    # `a.succeeded` is the tasks `a` and `succeeded` (argo lint: "dependency 'succeeded' not defined")
    assert [(r.task, r.result) for r in depends_refs("a.succeeded")] == [("a", None), ("succeeded", None)]
    assert [(r.task, r.result) for r in depends_refs("a==b")] == [("a", None), ("b", None)]
    ref = depends_refs("x && task-2.Errored")[1]
    assert (ref.start, ref.end) == (5, 19)


def test_tokens_of_an_expanded_expression():
    assert depends_tokens("(a.Succeeded||!b.Failed) && c.Skipped", "e") == [
        "(", "a.Succeeded", "||", "!", "b.Failed", ")", "&&", "c.Skipped"]
    with pytest.raises(ExpressionError, match="depends 'e': unexpected '% b'"):
        depends_tokens("a.Succeeded % b", "e")


def test_evaluation_waits_then_decides():
    tasks = {"a": TaskState("Succeeded"), "b": TaskState("Running")}
    assert evaluate_depends("a && b", tasks) is None
    tasks["b"] = TaskState("Failed")
    assert evaluate_depends("a && b", tasks) is False
    assert evaluate_depends("a && b.Failed", tasks) is True
    assert evaluate_depends("", tasks) is True


# ------------------------------------------------------------------------------------------------ dag


def test_topological_order_and_cycles():
    deps = {"c": ["b"], "b": ["a"], "a": [], "d": ["a", "c"]}
    order, blocked = dag.topological_order(deps)
    assert blocked == [] and order.index("a") < order.index("b") < order.index("c") < order.index("d")
    assert dag.find_cycle(deps) is None
    assert dag.ancestors(deps, "d") == {"a", "b", "c"}

    cyclic = {"x": [], "a": ["b"], "b": ["c"], "c": ["a", "x"], "after": ["c"]}
    order, blocked = dag.topological_order(cyclic)
    assert order == ["x"] and blocked == ["a", "b", "c", "after"]
    # a path in which each task depends on the next, from the first task of the DAG on the cycle
    assert dag.find_cycle(cyclic) == ["a", "b", "c", "a"]
    assert dag.ancestors(cyclic, "a") == {"a", "b", "c", "x"}
    assert dag.find_cycle({"self": ["self"]}) == ["self", "self"]


def test_cycle_found_is_the_one_met_following_depends_from_the_top():
    # VALIDATE verifyNoCycles walks each task's dependencies in task order; the first cycle met is reported
    deps = {"list-images": ["enhance"], "assess-image": ["list-images"], "aggregate": ["assess-image"],
            "enhance": ["aggregate"], "publish": ["aggregate"]}
    assert dag.find_cycle(deps) == ["list-images", "enhance", "aggregate", "assess-image", "list-images"]
    # a cycle entered from outside starts where the walk entered it
    assert dag.find_cycle({"top": ["m"], "m": ["n"], "n": ["m"]}) == ["m", "n", "m"]


# ------------------------------------------------------------------------------------------------ quantities


@pytest.mark.parametrize(("text", "value"), [
    ("500m", Decimal("0.5")), ("2", 2), (2, 2), (0.5, Decimal("0.5")), ("512Mi", 512 * 2**20), ("1G", 10**9),
    ("1.5Gi", Decimal(3 * 2**29)), ("1e3", 1000), ("1E", 10**18), ("1E-2", Decimal("0.01")), ("100n", Decimal("1e-7")),
    ("3u", Decimal("3e-6")), ("1Ei", 2**60), (".5", Decimal("0.5")), ("5.", 5), ("+1", 1), ("-1", -1),
    (" 1Gi ", 2**30),  # QTY UnmarshalJSON trims space
])
def test_quantities(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", [
    # QTY refuses these; the Python client alone would take the first four
    "NaN", "Infinity", "1_000", "1e3Mi",
    "1K", "1ki", "1 Gi", "", "abc", "1e", "0x10", True,
])
def test_quantities_kubernetes_refuses(text):
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        parse_quantity(text)


def _imports_after(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_quantity_import_stays_lazy():
    """The kubernetes package (its whole API client) is imported when a quantity is first read, not with the
    engine's loader."""
    code = "import sys, kai_flows.engine.load as l; a = 'kubernetes' in sys.modules; l.parse_quantity('1', 'x'); " \
           "print(a, 'kubernetes' in sys.modules)"
    assert _imports_after(code) == "False True"


# ------------------------------------------------------------------------------------------------ durations

@pytest.mark.parametrize(("text", "ns"), [
    # GO parseDurationTests
    ("0", 0), ("5s", 5 * 10**9), ("30s", 30 * 10**9), ("1478s", 1478 * 10**9), ("-5s", -5 * 10**9),
    ("+5s", 5 * 10**9), ("-0", 0), ("+0", 0), ("5.0s", 5 * 10**9), ("5.6s", 5_600_000_000), ("5.s", 5 * 10**9),
    (".5s", 500_000_000), ("1.0s", 10**9), ("1.00s", 10**9), ("1.004s", 1_004_000_000), ("1.0040s", 1_004_000_000),
    ("100.00100s", 100_001_000_000), ("10ns", 10), ("11us", 11_000), ("12\u00b5s", 12_000), ("12\u03bcs", 12_000),
    ("13ms", 13_000_000), ("14s", 14 * 10**9), ("15m", 15 * 60 * 10**9), ("16h", 16 * 3600 * 10**9),
    ("3h30m", (3 * 3600 + 30 * 60) * 10**9), ("10.5s4m", (4 * 60 + 10) * 10**9 + 500_000_000),
    ("-2m3.4s", -(123 * 10**9 + 400_000_000)), ("1h2m3s4ms5us6ns", 3723_004_005_006),
    ("39h9m14.425s", (39 * 3600 + 9 * 60 + 14) * 10**9 + 425_000_000), ("52763797000ns", 52_763_797_000),
    ("0.3333333333333333333h", 20 * 60 * 10**9), ("9007199254740993ns", 9007199254740993),
    ("9223372036854775807ns", 2**63 - 1), ("9223372036854775.807us", 2**63 - 1),
    ("9223372036s854ms775us807ns", 2**63 - 1), ("-9223372036854775808ns", -(2**63)),
    ("-9223372036854775.808us", -(2**63)), ("0.100000000000000000000h", 6 * 60 * 10**9),
    ("0.830103483285477580700h", (49 * 60 + 48) * 10**9 + 372_539_827),
])
def test_go_durations(text, ns):
    assert parse_go_duration(text) == ns / 1e9


@pytest.mark.parametrize(("text", "message"), [
    # GO: the invalid ones, with Go's messages
    ("", 'time: invalid duration ""'), ("3", 'time: missing unit in duration "3"'), ("-", 'invalid duration "-"'),
    ("s", 'invalid duration "s"'), (".", 'invalid duration "."'), ("-.", 'invalid duration "-."'),
    (".s", 'invalid duration ".s"'), ("+.s", 'invalid duration "+.s"'), ("1d", 'time: unknown unit "d" in duration'),
    ("9223372036854775808ns", "invalid duration"), ("9223372036854775.808us", "invalid duration"),
    ("9223372036854ms775us808ns", "invalid duration"), ("-9223372036854775809ns", "invalid duration"),
    ("1 s", 'unknown unit " s"'),
])
def test_go_durations_refused(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_go_duration(text)


def test_argo_duration_fields():
    """retry.go parseStringToDuration: a bare integer is seconds, anything else a Go duration."""
    assert parse_duration("30") == 30 and parse_duration(30) == 30 and parse_duration("-5") == -5
    assert parse_duration("1m30s") == 90 and parse_duration("300ms") == 0.3
    for bad in ("1.5", "1d", "", True, "10 s"):
        with pytest.raises(ValueError):
            parse_duration(bad)


# ------------------------------------------------------------------------------------------------ names


def test_names_are_argos():
    # NAMES: 32-bit FNV-1a (offset basis for ""), printed in decimal in node ids and v2 pod names
    assert names.fnv32a("") == 0x811C9DC5
    h = names.fnv32a("wf.a")
    assert names.argo_node_id("wf", "wf.a") == f"wf-{h}" and names.argo_node_id("wf", "wf") == "wf"
    assert names.argo_pod_name("wf", "step", "wf.a") == f"wf-step-{h}"
    assert names.argo_artifact_key("wf", f"wf-step-{h}", "out") == f"wf/wf-step-{h}/out"


def test_one_queue_configmap_name_for_every_layer():
    from kai_flows import policy

    assert policy.QUEUE_CONFIGMAP is names.QUEUE_CONFIGMAP == "kai-queues"
    assert policy.load_policy().queue_configmap == names.QUEUE_CONFIGMAP


def test_the_compiler_does_not_import_the_entry_point():
    """The compiler needs the step's command and how values serialise, both in kai_flows.step; the entry point
    (what a pod runs) stays out of the compiler's imports."""
    assert _imports_after("import sys, kai_flows.compile; print('kai_flows.entrypoint' in sys.modules)") == "False"
