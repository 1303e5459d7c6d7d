"""`depends` and `when`, with every expected outcome taken from Argo v3.7's documented or implemented behaviour.

Sources cited per test: docs/enhanced-depends-logic.md (DOC), workflow/common/ancestry.go (ANCESTRY),
workflow/controller/dag.go evaluateDependsLogic (DAG), workflow/validate/validate.go (VALIDATE),
workflow/controller/steps.go shouldExecute (WHEN: govaluate with variables turned into strings), and
Knetic/govaluate at the pinned revision: parsing.go, lexerState.go, stagePlanner.go, evaluationStage.go (GOVAL).
"""

from __future__ import annotations

import itertools

import pytest

from kai_flows.argo.depends import (
    ExpressionError,
    TaskState,
    depends_from_dependencies,
    depends_task_names,
    evaluate_depends,
)
from kai_flows.engine.expressions import evaluate_when

PHASES = ["Succeeded", "Failed", "Error", "Skipped", "Omitted", "Daemoned"]


def done(phase: str, **kw) -> TaskState:
    return TaskState(phase=phase, **kw)


# ------------------------------------------------------------------------------------------------ depends


def test_dependencies_list_is_depends_joined_with_and():
    # DOC: `dependencies: ["A", "B", "C"]` is equivalent to `depends: "A && B && C"`.
    assert depends_from_dependencies(["A", "B", "C"]) == "A && B && C"
    assert depends_from_dependencies([]) == ""


@pytest.mark.parametrize(("a", "b"), list(itertools.product(PHASES, PHASES)))
def test_dependencies_and_depends_agree_on_every_outcome(a, b):
    # DOC + ANCESTRY getTaskDependsLogic: dependencies [A, B] expand to
    # "(A.Succeeded || A.Skipped || A.Daemoned) && (B.Succeeded || B.Skipped || B.Daemoned)".
    tasks = {"A": done(a), "B": done(b)}
    ok = {"Succeeded", "Skipped", "Daemoned"}
    expected = a in ok and b in ok
    assert evaluate_depends(depends_from_dependencies(["A", "B"]), tasks) is expected
    assert evaluate_depends("A && B", tasks) is expected
    explicit = "(A.Succeeded || A.Skipped || A.Daemoned) && (B.Succeeded || B.Skipped || B.Daemoned)"
    assert evaluate_depends(explicit, tasks) is expected


@pytest.mark.parametrize(("phase", "expected"), [
    ("Succeeded", True), ("Skipped", True), ("Daemoned", True),  # DOC: task.Succeeded || task.Skipped || .Daemoned
    ("Failed", False), ("Error", False), ("Errored", False), ("Omitted", False),
])
def test_bare_task_name(phase, expected):
    assert evaluate_depends("A", {"A": done(phase)}) is expected


@pytest.mark.parametrize(("flags", "phase", "expected"), [
    # ANCESTRY expandDependency appends A.Errored for continueOn.error and A.Failed for continueOn.failed
    # (ancestry_test.go: "(task-1.Succeeded || task-1.Skipped || task-1.Daemoned || task-1.Failed)").
    ({"continue_on_failed": True}, "Failed", True),
    ({"continue_on_failed": True}, "Error", False),
    ({"continue_on_error": True}, "Error", True),
    ({"continue_on_error": True}, "Failed", False),
    ({"continue_on_error": True, "continue_on_failed": True}, "Failed", True),
    ({"continue_on_error": True, "continue_on_failed": True}, "Omitted", False),
])
def test_bare_task_name_with_continue_on(flags, phase, expected):
    assert evaluate_depends("A", {"A": done(phase, **flags)}) is expected
    # dependencies: [A] behaves the same (it is the same expansion)
    assert evaluate_depends(depends_from_dependencies(["A"]), {"A": done(phase, **flags)}) is expected


def test_continue_on_does_not_widen_an_explicit_result():
    # ANCESTRY: only bare names are expanded; `A.Succeeded` stays exactly that.
    assert evaluate_depends("A.Succeeded", {"A": done("Failed", continue_on_failed=True)}) is False


@pytest.mark.parametrize("result", ["Succeeded", "Failed", "Skipped", "Omitted", "Daemoned", "Errored"])
@pytest.mark.parametrize("phase", PHASES)
def test_each_result_is_true_only_for_its_phase(result, phase):
    # DAG evaluateDependsLogic: Errored <=> node phase Error; the others match the phase of the same name.
    expected = (result == "Errored" and phase == "Error") or result == phase
    assert evaluate_depends(f"A.{result}", {"A": done(phase)}) is expected


@pytest.mark.parametrize(("children", "any_succeeded", "all_failed"), [
    (["Succeeded", "Failed"], True, False),
    (["Failed", "Failed"], False, True),
    (["Failed", "Error"], False, False),  # DAG: AllFailed needs every child phase == Failed
    (["Skipped"], False, False),
    ([], False, False),  # DAG: allFailed starts as len(children) > 0
])
def test_any_succeeded_and_all_failed_on_fan_out(children, any_succeeded, all_failed):
    phase = "Failed" if "Failed" in children or "Error" in children else "Succeeded"
    tasks = {"A": done(phase, fanout=True, children_phases=children)}
    assert evaluate_depends("A.AnySucceeded", tasks) is any_succeeded
    assert evaluate_depends("A.AllFailed", tasks) is all_failed


@pytest.mark.parametrize("result", ["AnySucceeded", "AllFailed"])
def test_items_results_on_a_task_without_items_are_an_error(result):
    # VALIDATE: "dependency 'A' uses an items-based condition such as .AnySucceeded or .AllFailed but does not
    # contain any items"
    with pytest.raises(ExpressionError, match="items-based condition"):
        evaluate_depends(f"A.{result}", {"A": done("Succeeded")})


def test_unknown_result_is_an_error():
    # ANCESTRY ValidateTaskResults: "task result 'Done' for task 'A' is invalid"
    with pytest.raises(ExpressionError, match="task result 'Done' for task 'A' is invalid"):
        evaluate_depends("A.Done", {"A": done("Succeeded")})
    with pytest.raises(ExpressionError, match="'Done'"):
        depends_task_names("A.Done")


def test_operators_and_parentheses():
    # DOC example: "(task-2.Succeeded || task-2.Skipped) && !task-3.Failed"
    expr = "(task-2.Succeeded || task-2.Skipped) && !task-3.Failed"
    assert evaluate_depends(expr, {"task-2": done("Skipped"), "task-3": done("Succeeded")}) is True
    assert evaluate_depends(expr, {"task-2": done("Skipped"), "task-3": done("Failed")}) is False
    assert evaluate_depends(expr, {"task-2": done("Failed"), "task-3": done("Succeeded")}) is False
    # DOC: "task || task-2.Failed"
    assert evaluate_depends("task || task-2.Failed", {"task": done("Failed"), "task-2": done("Failed")}) is True


def test_and_binds_tighter_than_or():
    # depends is evaluated by expr-lang (DAG: argoexpr.EvalBool), where && (15) binds tighter than || (10).
    tasks = {"A": done("Succeeded"), "B": done("Failed"), "C": done("Failed")}
    assert evaluate_depends("A.Succeeded || B.Succeeded && C.Succeeded", tasks) is True
    assert evaluate_depends("(A.Succeeded || B.Succeeded) && C.Succeeded", tasks) is False
    assert evaluate_depends("!A.Succeeded || !B.Succeeded", tasks) is True


@pytest.mark.parametrize("state", [None, done("Running"), done("Pending")])
def test_undecided_while_a_dependency_is_not_finished(state):
    # DAG evaluateDependsLogic: any dependency node missing or not fulfilled -> proceed = false.
    tasks = {"A": done("Succeeded")}
    if state is not None:
        tasks["B"] = state
    assert evaluate_depends("A && B", tasks) is None
    # even when the finished operand alone would decide the result
    assert evaluate_depends("A || B", tasks) is None


def test_hyphenated_task_names():
    # ANCESTRY taskNameRegex allows '-'; DAG replaces '-' with '_' only to evaluate.
    assert depends_task_names("task-1.Succeeded || task-2") == {"task-1", "task-2"}
    tasks = {"task-1": done("Failed"), "task-2": done("Succeeded")}
    assert evaluate_depends("task-1.Succeeded || task-2", tasks) is True


def test_empty_depends_runs():
    assert evaluate_depends("", {}) is True


@pytest.mark.parametrize("expr", ["A &&", "(A", "A || || B", "A.Succeeded B.Succeeded", "A and B"])
def test_malformed_depends_is_an_error(expr):
    tasks = {"A": done("Succeeded"), "B": done("Succeeded"), "and": done("Succeeded")}
    with pytest.raises(ExpressionError, match="depends"):
        evaluate_depends(expr, tasks)


# ------------------------------------------------------------------------------------------------ when


@pytest.mark.parametrize(("expr", "expected"), [
    # WHEN: variable tokens become strings, "allows us to have expressions like: foo != bar"
    ("foo == foo", True),
    ("foo != bar", True),
    ("Yes == yes", False),
    ("heads == tails", False),
    # GOVAL: numeric literals are float64, compared numerically
    ("10 > 9", True),
    ("1 == 1.0", True),
    ("01 == 1", True),
    ("2 <= 1", False),
    # GOVAL gtStage: two strings compare lexicographically
    ("'10' > '9'", False),
    ("'b' > 'a'", True),
    # GOVAL equalStage is reflect.DeepEqual: a number never equals a string
    ("'1' == 1", False),
    ("true", True),
    ("false || true", True),
    ("!false", True),
    ("!(a == b)", True),
    ("(a == b) || (c == c)", True),
    ("true || false && false", True),  # govaluate #45: && binds tighter than ||
    ("false && true || true", True),  # govaluate #44
    ("b in (a, b)", True),
    ("c in (a, b)", False),
    ("5 in (4, 5)", True),
    ("'5' in (4, 5)", False),
    ("abc =~ '^a.c$'", True),
    ("'photos/set-12' =~ 'set-[0-9]+$'", True),
    ("abc !~ z", True),
    ("'s3://bucket/a-b c.jpg' == 's3://bucket/a-b c.jpg'", True),
    ('"a-b" == \'a-b\'', True),
    ("'with space' != 'with  space'", True),
    ("'it\\'s' == 'it\\'s'", True),  # GOVAL readUntilFalse: a backslash escapes the next character
    ("[hello world] == 'hello world'", True),  # GOVAL: [..] is an escaped variable name, hence a string
    ("1 + 2 == 3", True),
    ("'a' + 'b' == ab", True),
    ("true ? true : false", True),
    ("'2024-01-15' < '2024-02-01'", True),  # GOVAL tryParseTime: quoted dates compare as times
])
def test_when_truth_table(expr, expected):
    assert evaluate_when(expr) is expected


def test_when_empty_is_true():
    # WHEN: `if when == "" { return true, nil }`
    assert evaluate_when("") is True


def test_unquoted_date_is_arithmetic():
    # GOVAL: '-' after a number is a subtraction; 2024-01-15 is the number 2008 (why Argo says: quote values).
    assert evaluate_when("2024-01-15 == 2008") is True


@pytest.mark.parametrize(("expr", "reason"), [
    ("my-value == my-value", "cannot be used with the modifier '-'"),  # string minus string
    ("a/b == a/b", "cannot be used with the modifier '/'"),
    ("hello world == hello world", "Cannot transition token types from VARIABLE"),
    ("file.txt == file.txt", "unexported field 'txt'"),  # GOVAL: an accessor on a parameter
    ("1.2.3 == 1", "Unable to parse numeric value"),
    ("a in (a)", "cannot be used with the comparator 'in'"),  # GOVAL inStage needs a list
    ("'unclosed == x", "Unclosed string literal"),
    ("(a == a", "Unbalanced parenthesis"),
    ("{{tasks.a.outputs.result}} == x", "Invalid token"),  # an unsubstituted tag
    ("true && 'x'", "not a bool"),
    ("a == ", "Unexpected end of expression"),
])
def test_when_errors_name_the_expression(expr, reason):
    with pytest.raises(ExpressionError) as info:
        evaluate_when(expr)
    message = str(info.value)
    assert reason in message
    assert repr(expr) in message
    assert "\n" not in message


@pytest.mark.parametrize("expr", ["a", "1 + 1", "'text'"])
def test_when_must_be_boolean(expr):
    # WHEN: "Expected boolean evaluation for '%s'. Got %v"
    with pytest.raises(ExpressionError, match="expected a boolean"):
        evaluate_when(expr)
