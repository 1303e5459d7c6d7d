"""Wiring is checked when a task is added; every wrong edge names both ends."""

from typing import Literal

import pytest

from kai_flows.compile import compile_pipeline
from kai_flows.pipeline import WORKFLOW_FAILURES, WORKFLOW_STATUS, Pipeline, PipelineError
from tests.foundation.steps_fixture import count_lines, needs_list, reads_status


def test_artifact_cannot_feed_a_parameter():
    p = Pipeline("t")
    doc = p.input_artifact("doc")
    first = p.task(count_lines, text=doc)
    with pytest.raises(PipelineError, match=r"task 'needs-list' argument 'numbers' is a list\[int\] parameter; "
                                            r"it cannot take artifact count-lines.summary"):
        p.task(needs_list, numbers=first["summary"])


def test_parameter_cannot_feed_an_artifact():
    p = Pipeline("t")
    label = p.param("label", str, default="a")
    with pytest.raises(PipelineError, match="argument 'text' is an artifact; it cannot take parameter 'label'"):
        p.task(count_lines, text=label)


def test_incompatible_parameter_types_name_both_ends():
    p = Pipeline("t")
    first = p.task(count_lines, text=p.input_artifact("doc"))
    with pytest.raises(PipelineError, match=r"argument 'scale' expects float, but count-lines.label is str"):
        p.task(count_lines, name="second", text=p.input_artifact("doc2"), scale=first["label"])
    # int -> float is fine, and a Literal parameter accepts a pipeline enum that fits it
    mode = p.param("mode", Literal["fast", "slow"], default="fast")
    p.task(count_lines, name="third", text=p.input_artifact("doc3"), scale=first["lines"], mode=mode)


def test_free_string_cannot_feed_a_literal():
    p = Pipeline("t")
    free = p.param("free", str, default="fast")
    with pytest.raises(PipelineError, match="argument 'mode' expects"):
        p.task(count_lines, text=p.input_artifact("doc"), mode=free)


def test_constants_are_validated_and_unknown_arguments_named():
    p = Pipeline("t")
    doc = p.input_artifact("doc")
    with pytest.raises(PipelineError, match=r"argument 'mode': 'medium' is not a"):
        p.task(count_lines, text=doc, mode="medium")
    with pytest.raises(PipelineError, match="has no parameter or input artifact 'colour'"):
        p.task(count_lines, text=doc, colour="red")
    with pytest.raises(PipelineError, match="input artifact 'text' of count-lines is not given"):
        p.task(count_lines)
    with pytest.raises(PipelineError, match="'summary' is an output artifact of count-lines"):
        p.task(count_lines, text=doc, summary=doc)


def test_outputs_of_tasks_not_in_the_pipeline_are_refused():
    other = Pipeline("other")
    foreign = other.task(count_lines, text=other.input_artifact("doc"))
    p = Pipeline("t")
    with pytest.raises(PipelineError, match="comes from task 'count-lines', which is not in pipeline 't'"):
        p.task(count_lines, text=p.input_artifact("doc"), label=foreign["label"])


def test_fan_out_aggregates_results_not_artifacts():
    p = Pipeline("t")
    item = p.each([1, 2, 3])
    doc = p.input_artifact("doc")
    fan = p.task(count_lines, text=doc, scale=item)
    with pytest.raises(PipelineError, match="fans out: its artifact 'summary' is not aggregated"):
        fan["summary"]
    with pytest.raises(PipelineError, match=r"use count-lines.result"):
        fan["lines"]
    assert fan["label"].type == list[str]
    with pytest.raises(PipelineError, match=r"expects list\[int\], but count-lines.result is list\[Counted\]"):
        p.task(needs_list, numbers=fan.result)


def test_each_needs_a_list_output():
    p = Pipeline("t")
    first = p.task(count_lines, text=p.input_artifact("doc"))
    with pytest.raises(PipelineError, match="count-lines.label is a str, not a list"):
        p.each(first["label"])


def test_exit_handler_reads_status_but_not_task_outputs():
    p = Pipeline("t")
    first = p.task(count_lines, text=p.input_artifact("doc"))
    with pytest.raises(PipelineError, match="workflow.status exists only in the exit handler"):
        p.task(reads_status, workflow_status=WORKFLOW_STATUS)
    with pytest.raises(PipelineError, match="exit handler 'reads-status' cannot read task outputs"):
        p.on_exit(reads_status, workflow_status=first["label"])
    p.on_exit(reads_status, workflow_status=WORKFLOW_STATUS, failures=WORKFLOW_FAILURES,
              when=WORKFLOW_STATUS != "Succeeded")
    wt = compile_pipeline(p)
    assert wt["spec"]["onExit"] == "exit-handler"
    exit_dag = next(t for t in wt["spec"]["templates"] if t["name"] == "exit-handler")["dag"]["tasks"][0]
    assert exit_dag["when"] == "'{{workflow.status}}' != 'Succeeded'"
    assert {a["name"]: a["value"] for a in exit_dag["arguments"]["parameters"]} == {
        "workflow_status": "{{workflow.status}}", "failures": "{{workflow.failures}}"}


def test_params_need_defaults_or_required_and_defaults_are_typed():
    p = Pipeline("t")
    with pytest.raises(PipelineError, match="give a default or mark it required"):
        p.param("x", int)
    with pytest.raises(PipelineError, match="default 'many' is not a int"):
        p.param("y", int, default="many")
    with pytest.raises(PipelineError, match="already has a parameter or input named 'z'"):
        p.param("z", int, default=1)
        p.input_artifact("z")
