"""One test per Argo rule the engine implements; expected outcomes from Argo's docs and controller sources
(docs/enhanced-depends-logic.md, docs/walk-through/conditionals.md, docs/walk-through/loops.md,
docs/retries.md, docs/variables.md, workflow/controller/dag.go, operator.go, executor.go)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from kai_flows.argo.names import argo_node_id, argo_pod_name
from tests.engine.wf import ECHO, FAIL, OK, WRITE_PARAM, container, dag, workflow


def phases(result) -> dict[str, str]:
    return {n.display_name: n.phase for n in result.nodes.values() if n.type != "DAG"}


def test_parameters_result_and_output_files_pass_between_tasks(run):
    """executor.go: `result` is stdout with one trailing newline trimmed; a valueFrom.path parameter has one
    trailing newline trimmed; valueFrom.default applies when the file is missing."""
    doc = workflow([
        dag("main", [
            {"name": "a", "template": "produce", "arguments": {"parameters": [{"name": "v", "value": "hi"}]}},
            {"name": "b", "template": "echo", "depends": "a", "arguments": {"parameters": [
                {"name": "x", "value": "{{tasks.a.outputs.parameters.p}}|{{tasks.a.outputs.result}}|"
                                       "{{tasks.a.outputs.parameters.missing}}"}]}},
        ]),
        container("produce", "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(sys.argv[2] + '\\n\\n');"
                  " print('out')", "{{outputs.parameters.p.path}}", "{{inputs.parameters.v}}",
                  params=[{"name": "v"}],
                  outputs={"parameters": [{"name": "p", "valueFrom": {"path": "/tmp/p"}},
                                          {"name": "missing", "valueFrom": {"path": "/tmp/m", "default": "dflt"}}]}),
        container("echo", ECHO, "{{inputs.parameters.x}}", params=[{"name": "x"}]),
    ])
    r = run(doc)
    assert r.phase == "Succeeded", r.message
    assert r.node("b").outputs["result"] == "hi\n|out|dflt"


def test_node_names_ids_and_pod_names_follow_argo(run):
    """argo.md: node `<wf>.<task>`, children `<wf>.<task>(<i>:<item>)`, id `<wf>-<fnv32a(name)>`,
    pod name `<wf>-<template>-<fnv32a(name)>`; the root node's id is the workflow name."""
    doc = workflow([dag("main", [{"name": "fan", "template": "echo", "withItems": ["x", "y"],
                                  "arguments": {"parameters": [{"name": "x", "value": "{{item}}"}]}}]),
                    container("echo", "import sys; print(sys.argv[1], sys.argv[2])", "{{inputs.parameters.x}}",
                              "{{pod.name}}", params=[{"name": "x"}])])
    r = run(doc)
    wf = r.name
    assert r.nodes[wf].type == "DAG"
    child = f"{wf}.fan(1:y)"
    node = next(n for n in r.nodes.values() if n.name == child)
    assert node.id == argo_node_id(wf, child)
    assert node.outputs["result"] == f"y {argo_pod_name(wf, 'echo', child)}"
    group = next(n for n in r.nodes.values() if n.name == f"{wf}.fan")
    assert group.type == "TaskGroup"


def test_when_false_is_skipped_and_plain_dependents_still_run(run):
    """conditionals / enhanced-depends-logic: a task whose `when` is false is Skipped; a bare `A` dependency
    is satisfied by A.Skipped, so its dependent runs."""
    doc = workflow([dag("main", [
        {"name": "a", "template": "ok", "when": "'{{workflow.parameters.mode}}' == 'other'"},
        {"name": "b", "template": "ok", "depends": "a"},
    ]), container("ok", OK)], params=[{"name": "mode", "value": "this"}])
    r = run(doc)
    assert phases(r) == {"a": "Skipped", "b": "Succeeded"}
    assert r.phase == "Succeeded"
    assert "evaluated false" in r.node("a").message


def test_depends_false_is_omitted_and_omission_cascades(run):
    """enhanced-depends-logic: a task whose depends is false is Omitted; its plain dependents are Omitted too."""
    doc = workflow([dag("main", [
        {"name": "a", "template": "ok"},
        {"name": "b", "template": "ok", "depends": "a.Failed"},
        {"name": "c", "template": "ok", "depends": "b"},
    ]), container("ok", OK)])
    r = run(doc)
    assert phases(r) == {"a": "Succeeded", "b": "Omitted", "c": "Omitted"}
    assert r.phase == "Succeeded"  # dag.go assessDAGPhase: an omitted target inherits its branch (Succeeded)


def test_failed_dependency_omits_dependents_and_fails_the_run(run):
    """A Failed task omits plain dependents; the run is Failed and names the failing child."""
    doc = workflow([dag("main", [
        {"name": "a", "template": "fail"},
        {"name": "b", "template": "ok", "depends": "a"},
    ]), container("ok", OK), container("fail", FAIL)])
    r = run(doc)
    assert phases(r) == {"a": "Failed", "b": "Omitted"}
    assert r.phase == "Failed"
    assert "exit code 3" in r.node("a").message and "boom" in r.node("a").message


def test_failure_handled_by_depends_runs_handler_and_dag_succeeds(run):
    """dag-continue-on-fail / assessDAGPhase: the DAG phase comes from its targets; a target that ran because
    `a.Failed` succeeded, so the workflow succeeds."""
    doc = workflow([dag("main", [
        {"name": "a", "template": "fail"},
        {"name": "on-fail", "template": "ok", "depends": "a.Failed"},
    ]), container("ok", OK), container("fail", FAIL)])
    r = run(doc)
    assert phases(r) == {"a": "Failed", "on-fail": "Succeeded"}
    assert r.phase == "Succeeded"


def test_fan_out_aggregates_succeeded_children_in_index_order(run):
    """loops / processAggregateNodeOutputs: `tasks.T.outputs.parameters.P` is a JSON list of the children's
    values, `outputs.result` a JSON list of each result parsed as JSON, in index order."""
    doc = workflow([dag("main", [
        {"name": "fan", "template": "square", "withItems": [3, 1, 2],
         "arguments": {"parameters": [{"name": "n", "value": "{{item}}"}]}},
        {"name": "sum", "template": "echo", "depends": "fan", "arguments": {"parameters": [
            {"name": "x", "value": "{{tasks.fan.outputs.parameters.sq}} {{tasks.fan.outputs.result}}"}]}},
    ]), container("square", "import sys, time, pathlib; n = int(sys.argv[1]); time.sleep(0.1 * n); "
                  "pathlib.Path(sys.argv[2]).write_text(str(n * n)); print('{\"n\": %d}' % n)",
                  "{{inputs.parameters.n}}", "{{outputs.parameters.sq.path}}", params=[{"name": "n"}],
                  out_params=["sq"]),
        container("echo", ECHO, "{{inputs.parameters.x}}", params=[{"name": "x"}])])
    r = run(doc)
    assert r.phase == "Succeeded", r.message
    params, result = r.node("sum").outputs["result"].split(" ", 1)
    assert json.loads(params) == ["9", "1", "4"]
    assert json.loads(result) == [{"n": 3}, {"n": 1}, {"n": 2}]


def test_with_param_and_with_sequence(run):
    """withParam must parse as a JSON list of the producer's output; withSequence count gives 0..count-1."""
    doc = workflow([dag("main", [
        {"name": "list", "template": "echo", "arguments": {"parameters": [{"name": "x", "value": '["a","b"]'}]}},
        {"name": "each", "template": "echo", "depends": "list", "withParam": "{{tasks.list.outputs.result}}",
         "arguments": {"parameters": [{"name": "x", "value": "p-{{item}}"}]}},
        {"name": "seq", "template": "echo", "withSequence": {"count": "3"},
         "arguments": {"parameters": [{"name": "x", "value": "s{{item}}"}]}},
    ]), container("echo", ECHO, "{{inputs.parameters.x}}", params=[{"name": "x"}])])
    r = run(doc)
    assert r.phase == "Succeeded", r.message
    p = phases(r)
    names = sorted(n for n in p if n.startswith(("each(", "seq(")))
    assert names == ["each(0:a)", "each(1:b)", "seq(0:0)", "seq(1:1)", "seq(2:2)"]
    assert r.node("each(1:b)").outputs["result"] == "p-b"


def test_empty_fan_out_is_skipped_and_dependents_run(run):
    """dag.go: an empty withParam list gives a Skipped node ('Skipped, empty params'); bare depends run."""
    doc = workflow([dag("main", [
        {"name": "each", "template": "ok", "withParam": "[]"},
        {"name": "after", "template": "ok", "depends": "each"},
    ]), container("ok", OK)])
    r = run(doc)
    assert phases(r) == {"each": "Skipped", "after": "Succeeded"}


def test_any_succeeded_and_all_failed(run):
    """enhanced-depends-logic: `.AnySucceeded` / `.AllFailed` on fan-out tasks."""
    doc = workflow([dag("main", [
        {"name": "fan", "template": "maybe", "withItems": ["0", "1"],
         "arguments": {"parameters": [{"name": "n", "value": "{{item}}"}]}},
        {"name": "any", "template": "ok", "depends": "fan.AnySucceeded"},
        {"name": "all", "template": "ok", "depends": "fan.AllFailed"},
    ], dag_extra={"failFast": False}), container("ok", OK),
        container("maybe", "import sys; sys.exit(int(sys.argv[1]))", "{{inputs.parameters.n}}",
                  params=[{"name": "n"}])])
    r = run(doc)
    p = phases(r)
    assert p["fan"] == "Failed" and p["any"] == "Succeeded" and p["all"] == "Omitted"


def test_artifacts_pass_by_from_and_subpath_under_argo_keys(run, store, tmp_path):
    """Artifacts: an output goes to `<wf>/<pod>/<basename(path)>` (archive none); `from` hands it to a
    dependent; `subPath` selects a file of a directory artifact; pipeline outputs land in --out."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.txt").write_text("AAA")
    (images / "b.txt").write_text("BBB")
    doc = workflow([
        dag("main", [
            {"name": "copy", "template": "copy", "arguments": {"artifacts": [
                {"name": "src", "s3": {"key": "{{workflow.parameters.images}}"}}]}},
            {"name": "one", "template": "cat", "depends": "copy", "arguments": {"artifacts": [
                {"name": "f", "from": "{{tasks.copy.outputs.artifacts.dst}}", "subPath": "b.txt"}]}},
        ]),
        container("copy", "import sys, shutil; shutil.copytree(sys.argv[1], sys.argv[2])",
                  "{{inputs.artifacts.src.path}}", "{{outputs.artifacts.dst.path}}",
                  in_artifacts=[{"name": "src", "path": "/in/src"}],
                  out_artifacts=[{"name": "dst", "path": "/out/dst"}]),
        container("cat", "import sys, pathlib; d = pathlib.Path(sys.argv[2]); d.write_text("
                  "pathlib.Path(sys.argv[1]).read_text() + '!')",
                  "{{inputs.artifacts.f.path}}", "{{outputs.artifacts.report.path}}",
                  in_artifacts=[{"name": "f", "path": "/in/f"}],
                  out_artifacts=[{"name": "report", "path": "/o/report"}]),
    ], params=[{"name": "images"}], annotations={"kai-flows.io/inputs": '{"images": "images"}',
                                                  "kai-flows.io/outputs": '{"report": "one.report"}'})
    r = run(doc, inputs={"images": images})
    assert r.phase == "Succeeded", r.message
    key = next(a["s3"]["key"] for a in r.node("copy").outputs["artifacts"])
    pod = argo_pod_name(r.name, "copy", f"{r.name}.copy")
    assert key == f"{r.name}/{pod}/dst"
    input_key = json.loads(r.record.read_text())["kai"]["parameters"]["images"]
    assert input_key.startswith("inputs/sha256-") and input_key.endswith("/images")  # stored by content
    assert store.is_dir(key) and store.is_dir(input_key)
    assert (tmp_path / "out" / "report").read_text() == "BBB!"
    assert r.outputs["report"] == tmp_path / "out" / "report"
    assert sorted(p.name for p in images.iterdir()) == ["a.txt", "b.txt"]  # inputs untouched


def test_missing_declared_output_is_an_error_and_optional_is_fine(run):
    """A declared output the step did not write: Argo's wait container fails -> Error (not Failed);
    `optional: true` outputs may be absent."""
    doc = workflow([dag("main", [{"name": "a", "template": "lazy"}, {"name": "b", "template": "opt"}],
                        dag_extra={"failFast": False}),
                    container("lazy", OK, out_artifacts=[{"name": "x", "path": "/o/x"}]),
                    container("opt", OK, out_artifacts=[{"name": "x", "path": "/o/x", "optional": True}])])
    r = run(doc)
    assert phases(r) == {"a": "Error", "b": "Succeeded"}
    assert "'x' was not written" in r.node("a").message
    assert r.phase == "Error"


def test_retry_on_failure_until_success_and_retries_variable(run, tmp_path):
    """retries.md: limit N gives N+1 attempts; OnFailure retries Failed attempts; `{{retries}}` is the
    attempt number; attempts are children `<node>(<n>)` of a Retry node."""
    code = "import sys; n = int(sys.argv[1]); print('attempt', n); sys.exit(0 if n >= 2 else 1)"
    doc = workflow([dag("main", [{"name": "flaky", "template": "flaky"}]),
                    container("flaky", code, "{{retries}}",
                              retryStrategy={"limit": "3", "retryPolicy": "OnFailure"})])
    r = run(doc)
    assert r.phase == "Succeeded", r.message
    node = r.node("flaky")
    assert node.type == "Retry" and node.retries == 2 and node.outputs["result"] == "attempt 2"
    attempts = sorted(n.display_name for n in r.nodes.values() if n.display_name.startswith("flaky("))
    assert attempts == ["flaky(0)", "flaky(1)", "flaky(2)"]


def test_retry_policy_on_error_does_not_retry_a_failed_step(run):
    """retries.md: OnError retries only Error nodes; a non-zero exit is Failed, so one attempt only."""
    doc = workflow([dag("main", [{"name": "a", "template": "fail"}]),
                    container("fail", FAIL, retryStrategy={"limit": "2", "retryPolicy": "OnError"})])
    r = run(doc)
    assert r.node("a").phase == "Failed" and r.node("a").retries == 0


def test_backoff_max_duration_stops_retrying(run):
    """retries.md backoff: a retry whose backoff would pass maxDuration is not made."""
    doc = workflow([dag("main", [{"name": "a", "template": "fail"}]),
                    container("fail", FAIL, retryStrategy={"limit": "5", "retryPolicy": "Always", "backoff": {
                        "duration": "1s", "factor": "4", "maxDuration": "3s"}})])
    r = run(doc)
    node = r.node("a")
    assert node.phase == "Failed" and node.retries == 1  # 1s then 4s would pass 3s
    assert "max duration" in node.message


def test_deadline_kills_the_whole_process_group(run, tmp_path):
    """activeDeadlineSeconds: the step is killed at its deadline -> Failed; its children go too."""
    pidfile = tmp_path / "child.pid"
    code = ("import subprocess, sys, time; p = subprocess.Popen(['sleep', '60']); "
            "open(sys.argv[1], 'w').write(str(p.pid)); time.sleep(60)")
    doc = workflow([dag("main", [{"name": "hang", "template": "hang"}]),
                    container("hang", code, str(pidfile), activeDeadlineSeconds="1")])
    r = run(doc)
    assert r.node("hang").phase == "Failed"
    assert "deadline" in r.node("hang").message
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_dag_parallelism_limits_concurrent_steps(run, tmp_path):
    """Template `parallelism` on a DAG: at most N of its steps run at once."""
    log = tmp_path / "spans"
    log.mkdir()
    code = ("import sys, time, pathlib; s = time.time(); time.sleep(0.3); "
            "pathlib.Path(sys.argv[1], sys.argv[2]).write_text(f'{s} {time.time()}')")
    doc = workflow([dag("main", [{"name": "fan", "template": "span", "withItems": [1, 2, 3],
                                  "arguments": {"parameters": [{"name": "i", "value": "{{item}}"}]}}],
                        parallelism=1),
                    container("span", code, str(log), "{{inputs.parameters.i}}", params=[{"name": "i"}])])
    r = run(doc, parallelism=4)
    assert r.phase == "Succeeded", r.message
    spans = sorted(tuple(map(float, p.read_text().split())) for p in log.iterdir())
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_exit_handler_sees_status_and_failures(run):
    """Exit handler: runs after the DAG with `workflow.status` (Failed here) and `workflow.failures` JSON."""
    doc = workflow([dag("main", [{"name": "a", "template": "fail"}]),
                    dag("exit", [{"name": "final", "template": "echo", "arguments": {"parameters": [
                        {"name": "x", "value": "{{workflow.status}}|{{workflow.failures}}"}]}}]),
                    container("fail", FAIL), container("echo", ECHO, "{{inputs.parameters.x}}",
                                                       params=[{"name": "x"}])],
                   onExit="exit")
    r = run(doc)
    assert r.phase == "Failed"
    status, failures = r.node("final").outputs["result"].split("|", 1)
    assert status == "Failed"
    assert json.loads(failures)[0]["displayName"] == "a"


def test_workflow_variables(run):
    """variables.md: workflow.name/uid/namespace/parameters, inputs.parameters JSON, node/pod names."""
    doc = workflow([dag("main", [{"name": "a", "template": "echo", "arguments": {"parameters": [
        {"name": "x", "value": "{{workflow.name}} {{workflow.uid}} {{workflow.namespace}} "
                               "{{workflow.parameters.p}}"}]}}]),
        container("echo", "import sys; print(sys.argv[1] + ' ' + sys.argv[2])", "{{inputs.parameters.x}}",
                  "{{inputs.parameters}}", params=[{"name": "x"}])],
        params=[{"name": "p", "value": "v1"}])
    r = run(doc)
    name, uid, ns, p, rest = r.node("a").outputs["result"].split(" ", 4)
    assert (name, uid, ns, p) == (r.name, r.uid, "kai-ml", "v1")
    assert json.loads(rest)[0]["name"] == "x"


def test_step_over_memory_limit_is_flagged(run):
    """The engine records peak memory and flags a step above its declared limit (a cluster would OOM it)."""
    doc = workflow([dag("main", [{"name": "big", "template": "big"}]),
                    container("big", "b = bytearray(120 * 2**20); b[::4096] = b'x' * len(b[::4096])")])
    doc["spec"]["templates"][1]["container"]["resources"] = {"limits": {"memory": "64Mi", "cpu": "64"}}
    r = run(doc)
    node = r.node("big")
    assert r.phase == "Succeeded"
    assert node.peak_memory_bytes > 120 * 2**20 and node.over_memory_limit
    assert node.cpu_seconds is not None and node.wall_seconds > 0
    assert any("exceeds its limit" in w for w in r.warnings)


def test_gpu_step_needs_cpu_fallback_annotation(run):
    """A GPU step runs on CPU only when kai-flows.io/cpu-fallback is "true"; otherwise an Error naming why."""
    gpu = {"limits": {"nvidia.com/gpu": "1"}}
    t_no = container("gpu-no", OK)
    t_no["container"]["resources"] = gpu
    t_yes = container("gpu-yes", "import os; print(repr(os.environ['CUDA_VISIBLE_DEVICES']))",
                      metadata={"annotations": {"kai-flows.io/cpu-fallback": "true"}})
    t_yes["container"]["resources"] = gpu
    doc = workflow([dag("main", [{"name": "no", "template": "gpu-no"}, {"name": "yes", "template": "gpu-yes"}],
                        dag_extra={"failFast": False}), t_no, t_yes])
    r = run(doc)
    assert r.node("no").phase == "Error" and "cpu-fallback" in r.node("no").message
    assert r.node("yes").phase == "Succeeded" and r.node("yes").outputs["result"] == "''"


def test_run_json_has_argo_status_shape_and_logs(run, tmp_path):
    doc = workflow([dag("main", [{"name": "a", "template": "talk"}]),
                    container("talk", "import sys; print('to-stderr', file=sys.stderr); print('{}')")])
    r = run(doc)
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["phase"] == "Succeeded" and record["progress"] == "1/1"
    assert {"startedAt", "finishedAt", "nodes", "kai"} <= set(record)
    node = next(n for n in record["nodes"].values() if n["displayName"] == "a")
    assert {"id", "name", "type", "templateName", "phase", "boundaryID", "startedAt", "finishedAt"} <= set(node)
    assert node["outputs"]["result"] == "{}" and node["outputs"]["exitCode"] == "0"
    log = Path(node["kai"]["log"])
    assert log.parent == tmp_path / "out" / "logs" and "to-stderr" in log.read_text()
    assert (tmp_path / "cache" / "runs" / r.name / "run.json").is_file()


def test_write_param_helper_roundtrip(run):
    """`{{outputs.parameters.X.path}}` is a per-task file the engine reads back."""
    doc = workflow([dag("main", [{"name": "w", "template": "w"}]),
                    container("w", WRITE_PARAM, "{{outputs.parameters.v.path}}", "value", out_params=["v"])])
    r = run(doc)
    assert r.node("w").outputs["parameters"] == [{"name": "v", "value": "value"}]


def test_metrics_use_duration_and_status(run):
    """metrics.md: `{{duration}}` and `{{status}}` are the metric-only variables; `when` filters a metric."""
    metrics = {"prometheus": [
        {"name": "dur", "help": "h", "labels": [{"key": "step", "value": "a"}],
         "gauge": {"realtime": False, "value": "{{duration}}"}},
        {"name": "fails", "help": "h", "when": "{{status}} == Failed", "counter": {"value": "1"}}]}
    doc = workflow([dag("main", [{"name": "a", "template": "ok"}]), container("ok", OK, metrics=metrics)])
    r = run(doc)
    record = json.loads(r.record.read_text())
    node = next(n for n in record["nodes"].values() if n["displayName"] == "a")
    (m,) = node["kai"]["metrics"]
    assert m["name"] == "dur" and float(m["value"]) > 0 and m["labels"] == {"step": "a"}


def test_resume_a_failed_run_reuses_succeeded_steps(run, tmp_path):
    """--resume on a Failed run: Succeeded nodes are reused (not rerun), the rest runs again."""
    marks = tmp_path / "marks"
    marks.mkdir()
    gate = tmp_path / "gate"
    first = "import sys, pathlib; pathlib.Path(sys.argv[1], 'first').write_text('x')"
    second = "import sys, pathlib; sys.exit(0 if pathlib.Path(sys.argv[1]).exists() else 5)"
    doc = workflow([dag("main", [{"name": "first", "template": "first"},
                                 {"name": "second", "template": "second", "depends": "first"}]),
                    container("first", first, str(marks)), container("second", second, str(gate))])
    r1 = run(doc)
    assert r1.phase == "Failed" and r1.node("first").phase == "Succeeded"
    (marks / "first").unlink()
    gate.write_text("open")
    r2 = run(doc, resume=r1.name)
    assert r2.phase == "Succeeded" and r2.name == r1.name
    assert r2.node("first").reused and not (marks / "first").exists()


def test_workflow_deadline_stops_the_run(run):
    """spec.activeDeadlineSeconds: the workflow is stopped at its deadline and Failed."""
    doc = workflow([dag("main", [{"name": "slow", "template": "slow"}]),
                    container("slow", "import time; time.sleep(30)")], activeDeadlineSeconds=1)
    r = run(doc)
    assert r.phase == "Failed" and "Max duration" in r.message
    assert r.node("slow").phase == "Failed"


def test_nested_dag_with_inputs(run):
    """A DAG task may call another DAG template; its tasks are named `<wf>.<outer>.<inner>` and see the
    nested template's `inputs.parameters`."""
    doc = workflow([dag("main", [{"name": "outer", "template": "inner", "arguments": {"parameters": [
        {"name": "msg", "value": "hello"}]}}]),
        dag("inner", [{"name": "say", "template": "echo", "arguments": {"parameters": [
            {"name": "x", "value": "{{inputs.parameters.msg}}"}]}}], inputs={"parameters": [{"name": "msg"}]}),
        container("echo", ECHO, "{{inputs.parameters.x}}", params=[{"name": "x"}])])
    r = run(doc)
    assert r.phase == "Succeeded", r.message
    say = next(n for n in r.nodes.values() if n.name == f"{r.name}.outer.say")
    assert say.outputs["result"] == "hello"
    assert r.nodes[argo_node_id(r.name, f"{r.name}.outer")].type == "DAG"


def test_missing_program_is_an_error_not_a_failure(run):
    """The engine cannot start the container's command: Argo reports such a pod as Error."""
    t = container("nope", OK)
    t["container"]["command"] = ["kai-no-such-program-xyz"]
    r = run(workflow([dag("main", [{"name": "a", "template": "nope"}]), t]))
    assert r.node("a").phase == "Error" and "kai-no-such-program-xyz" in r.node("a").message
