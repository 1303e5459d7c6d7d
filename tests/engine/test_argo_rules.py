"""Where the engine once differed from Argo v3.7: one test per rule, each naming the Argo source it follows
(argoproj/argo-workflows at v3.7.18: workflow/controller/{operator,dag,node_counters}.go, test/e2e, examples).
A local run that says Succeeded must mean Argo would say Succeeded."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.engine.wf import FAIL, OK, container, dag, workflow

SLEEP = "import sys, time; time.sleep(float(sys.argv[1]))"
# records its own start and end times, to measure how many ran at once
SPAN = ("import sys, time, pathlib; d = pathlib.Path(sys.argv[1]); t0 = time.time(); time.sleep(float(sys.argv[2]));"
        " (d / sys.argv[3]).write_text(f'{t0} {time.time()}')")
FLAKY = ("import sys, pathlib; m = pathlib.Path(sys.argv[1]); first = not m.exists(); m.write_text('x');"
         " sys.exit(1 if first else 0)")


def by_display(result) -> dict[str, tuple[str, str]]:
    return {n.display_name: (n.type, n.phase) for n in result.nodes.values()}


def most_at_once(folder: Path) -> int:
    spans = [tuple(map(float, p.read_text().split())) for p in folder.iterdir()]
    return max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)


def test_a_container_entrypoint_runs_as_its_own_pod_node(run, tmp_path):
    """operator.go executeTemplate(entrypoint): the root node is the entrypoint template itself, named after the
    workflow; a container entrypoint is a Pod node (examples/hello-world.yaml), and its failure is the
    workflow's."""
    marker = tmp_path / "ran"
    ok = run(workflow([container("main", "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text('x')",
                                 str(marker))]), out=tmp_path / "ok")
    assert ok.phase == "Succeeded" and marker.exists()
    assert [(n.name, n.type, n.phase) for n in ok.nodes.values()] == [(ok.name, "Pod", "Succeeded")]
    failed = run(workflow([container("main", FAIL)]), out=tmp_path / "failed")
    assert failed.phase == "Failed"
    assert failed.nodes[failed.name].type == "Pod"
    assert failed.message.startswith("Error (exit code 3)")


def test_a_container_exit_handler_runs_as_a_pod_node_and_its_failure_fails_the_workflow(run, tmp_path):
    """operator.go runOnExitNode: spec.onExit runs as node `<wf>.onExit` whatever its kind; a failed exit
    handler fails a workflow that had succeeded."""
    r = run(workflow([dag("main", [{"name": "a", "template": "ok"}]), container("ok", OK),
                      container("bye", FAIL)], onExit="bye"))
    exit_node = next(n for n in r.nodes.values() if n.name == f"{r.name}.onExit")
    assert (exit_node.type, exit_node.phase) == ("Pod", "Failed")
    assert r.phase == "Failed"


def test_a_parameterised_retry_limit_is_resolved_when_the_node_starts(run):
    """test/e2e/functional_test.go TestParametrizableLimit: `limit: "{{inputs.parameters.limit}}"` on a container
    entrypoint; the root is a Retry node with 2 attempts, Failed with "No more retries left" (3 nodes)."""
    r = run(workflow([container("main", FAIL, params=[{"name": "limit"}],
                                retryStrategy={"limit": "{{inputs.parameters.limit}}"})],
                     params=[{"name": "limit", "value": "1"}]))
    assert r.phase == "Failed"
    root = r.nodes[r.name]
    assert (root.type, root.message) == ("Retry", "No more retries left")
    assert len(r.nodes) == 3


def test_spec_retry_strategy_retries_the_entrypoint_dag_as_a_retry_node(run, tmp_path):
    """operator.go retryStrategy(): spec.retryStrategy applies to every template without its own, DAGs included;
    the entrypoint becomes a Retry node whose attempts `<wf>(0)`, `<wf>(1)` are whole DAG runs."""
    marker = tmp_path / "failed-once"
    doc = workflow([dag("main", [{"name": "flaky", "template": "flaky"}]),
                    container("flaky", FLAKY, str(marker), retryStrategy={"limit": 0})],
                   retryStrategy={"limit": 1})
    r = run(doc)
    assert r.phase == "Succeeded", r.message
    nodes = by_display(r)
    assert nodes[r.name] == ("Retry", "Succeeded")
    assert nodes[f"{r.name}(0)"] == ("DAG", "Failed") and nodes[f"{r.name}(1)"] == ("DAG", "Succeeded")
    names = {n.name for n in r.nodes.values()}
    assert {f"{r.name}(0).flaky", f"{r.name}(1).flaky"} <= names  # the attempt is the tasks' boundary


def test_dag_fail_fast_never_stops_a_task_from_starting(run, tmp_path):
    """dag.go assessDAGPhase: `dag.failFast` only decides how the DAG's phase is read once nothing in it runs;
    the controller keeps starting every task whose dependencies allow it (issues #5223 and #10312: the docs
    say otherwise; the controller is what runs). So `after-slow` runs after `bad` failed, either way."""
    def doc(fail_fast: bool | None) -> dict:
        extra = {} if fail_fast is None else {"dag_extra": {"failFast": fail_fast}}
        return workflow([dag("main", [
            {"name": "bad", "template": "fail"},
            {"name": "slow", "template": "sleep"},
            {"name": "after-slow", "template": "ok", "depends": "slow"},
        ], **extra), container("ok", OK), container("fail", FAIL), container("sleep", SLEEP, "1")])
    for fail_fast in (None, True, False):
        r = run(doc(fail_fast), out=tmp_path / f"o-{fail_fast}")
        phases = {k: v[1] for k, v in by_display(r).items() if k != r.name}
        assert phases == {"bad": "Failed", "slow": "Succeeded", "after-slow": "Succeeded"}, fail_fast
        assert r.phase == "Failed"


def test_template_fail_fast_stops_new_children_and_fails_the_dag(run, tmp_path):
    """operator.go checkParallelism (template-level `failFast: true`), test/e2e TestWorkflowParallelismDAGFailFast
    (expectedfailures/parallelism-dag-fail-fast.yaml): after task1 fails, running task2 finishes, nothing new
    starts (`later` never exists), and the DAG fails with the controller's message."""
    doc = workflow([
        {"name": "main", "parallelism": 2, "failFast": True, "dag": {"tasks": [
            {"name": "task1", "template": "fail"}, {"name": "task2", "template": "sleep"},
            {"name": "later", "template": "ok", "depends": "task2"}]}},
        container("fail", FAIL), container("sleep", SLEEP, "1"), container("ok", OK)])
    r = run(doc)
    assert r.phase == "Failed"
    assert r.message == "template has failed or errored children and failFast enabled"
    phases = {k: v[1] for k, v in by_display(r).items()}
    assert phases == {r.name: "Failed", "task1": "Failed", "task2": "Succeeded"}


def test_dag_target_runs_only_what_the_targets_need(run, tmp_path):
    """examples/dag-targets.yaml: with `target: "{{workflow.parameters.target}}"` = E only A, C and E run (B and
    D never exist); "B E" runs A, B, C and E; the DAG's phase comes from its targets."""
    tasks = [{"name": "A", "template": "ok"}, {"name": "B", "template": "ok", "depends": "A"},
             {"name": "C", "template": "ok", "depends": "A"}, {"name": "D", "template": "ok", "depends": "B && C"},
             {"name": "E", "template": "ok", "depends": "C"}]

    def ran(target: str) -> set[str]:
        doc = workflow([dag("main", tasks, dag_extra={"target": "{{workflow.parameters.target}}"}),
                        container("ok", OK)], params=[{"name": "target", "value": target}])
        r = run(doc, out=tmp_path / target.replace(" ", "-"))
        assert r.phase == "Succeeded", r.message
        return {n.display_name for n in r.nodes.values() if n.type == "Pod"}

    assert ran("E") == {"A", "C", "E"}
    assert ran("B E") == {"A", "B", "C", "E"}


def test_template_parallelism_counts_a_nested_dag_as_one_child(run, tmp_path):
    """node_counters.go getActiveChildren: a template's parallelism counts its running children, Pods and DAGs
    alike; the pods of a nested DAG count in that DAG, not in its parent. Outer parallelism 1 over two inner
    DAGs of two parallel pods each: two pods at a time (the inner DAGs one after the other), never four or
    one."""
    spans = tmp_path / "spans"
    spans.mkdir()
    inner = dag("inner", [{"name": f"p{i}", "template": "span", "arguments": {"parameters": [
        {"name": "id", "value": f"{{{{inputs.parameters.tag}}}}-{i}"}]}} for i in range(2)])
    inner["inputs"] = {"parameters": [{"name": "tag"}]}
    doc = workflow([
        {"name": "main", "parallelism": 1, "dag": {"tasks": [
            {"name": f"d{j}", "template": "inner", "arguments": {"parameters": [{"name": "tag", "value": f"d{j}"}]}}
            for j in range(2)]}},
        inner, container("span", SPAN, str(spans), "1", "{{inputs.parameters.id}}", params=[{"name": "id"}])])
    r = run(doc, parallelism=8)
    assert r.phase == "Succeeded", r.message
    assert most_at_once(spans) == 2
    d0 = [tuple(map(float, (spans / f"d0-{i}").read_text().split())) for i in range(2)]
    d1 = [tuple(map(float, (spans / f"d1-{i}").read_text().split())) for i in range(2)]
    assert max(e for _, e in d0) <= min(s for s, _ in d1) or max(e for _, e in d1) <= min(s for s, _ in d0)


def test_the_exit_handler_runs_after_the_workflow_deadline(run, tmp_path):
    """test/e2e/hooks_test.go TestExitHandlerWithWorkflowLevelDeadline: activeDeadlineSeconds stops the
    workflow (Failed), and its exit handler still runs and succeeds."""
    marker = tmp_path / "exit-ran"
    doc = workflow([dag("main", [{"name": "sleep", "template": "sleep"}]), container("sleep", SLEEP, "20"),
                    container("bye", "import sys, pathlib; pathlib.Path(sys.argv[1]).write_text('x')", str(marker))],
                   onExit="bye", activeDeadlineSeconds=1)
    started = time.monotonic()
    r = run(doc)
    assert time.monotonic() - started < 15
    assert r.phase == "Failed" and "Max duration limit exceeded" in r.message
    exit_node = next(n for n in r.nodes.values() if n.name == f"{r.name}.onExit")
    assert exit_node.phase == "Succeeded" and marker.exists()


def test_a_parameterised_active_deadline_is_resolved_when_the_pod_starts(run):
    """test/e2e TestParametrizableAds: `activeDeadlineSeconds: "{{inputs.parameters.ads}}"` bounds the pod."""
    r = run(workflow([container("main", SLEEP, "20", params=[{"name": "ads"}],
                                activeDeadlineSeconds="{{inputs.parameters.ads}}")],
                     params=[{"name": "ads", "value": "1"}]))
    assert r.phase == "Failed"
    assert r.nodes[r.name].message == "Pod was active on the node longer than the specified deadline (1s)"
    assert json.loads(r.record.read_text())["phase"] == "Failed"


def test_the_process_runtime_refuses_a_literal_artifact_path_by_name(run, tmp_path):
    """examples/artifact-passing.yaml writes `/tmp/hello_world.txt` literally: Argo collects it from the pod's own
    /tmp; a host process would write the machine's /tmp, shared by every step. Refused before anything runs,
    naming the field; the container runtime honours it."""
    import pytest

    from kai_flows.engine.model import TemplateError

    doc = workflow([dag("main", [{"name": "gen", "template": "hello-world-to-file"}]),
                    {"name": "hello-world-to-file",
                     "container": {"image": "busybox", "command": ["sh", "-c"],
                                   "args": ["echo hello world | tee /tmp/hello_world.txt"]},
                     "outputs": {"artifacts": [{"name": "hello-art", "path": "/tmp/hello_world.txt",
                                                "archive": {"none": {}}}]}}])
    with pytest.raises(TemplateError, match=r"spec.templates\[hello-world-to-file\].outputs.artifacts\[hello-art\]"
                                            r".path: the step is not given \{\{outputs.artifacts.hello-art.path\}\}"):
        run(doc)
    assert not (tmp_path / "out" / "run.json").exists()


def test_the_process_runtime_honours_env_and_gives_each_attempt_its_own_tmp(run, tmp_path):
    """container.env reaches the step (variables substituted), as in a pod; an emptyDir at /tmp is the attempt's
    own folder (TMPDIR), and an env value under /tmp points into it: two parallel steps never share it."""
    show = ("import os, sys, pathlib; pathlib.Path(sys.argv[1]).write_text(' '.join(os.environ.get(k, '-') for k in "
            "('OMP_NUM_THREADS', 'WHO', 'HOME', 'TMPDIR')))")
    step = container("show", show, "{{outputs.parameters.env.path}}", params=[{"name": "who"}],
                     outputs={"parameters": [{"name": "env", "valueFrom": {"path": "/tmp/env"}}]},
                     volumes=[{"name": "scratch", "emptyDir": {}}])
    step["container"]["env"] = [{"name": "OMP_NUM_THREADS", "value": "1"},
                                {"name": "WHO", "value": "{{inputs.parameters.who}}"},
                                {"name": "HOME", "value": "/tmp/home"}]
    step["container"]["volumeMounts"] = [{"name": "scratch", "mountPath": "/tmp"}]
    doc = workflow([dag("main", [{"name": f"s{i}", "template": "show", "arguments": {"parameters": [
        {"name": "who", "value": f"w{i}"}]}} for i in range(2)]), step])
    r = run(doc, keep_scratch=True)
    assert r.phase == "Succeeded", r.message
    seen = [r.node(f"s{i}").outputs["parameters"][0]["value"].split() for i in range(2)]
    for i, (omp, who, home, tmpdir) in enumerate(seen):
        assert (omp, who) == ("1", f"w{i}")
        assert tmpdir != "/tmp" and Path(tmpdir).is_dir() and home == f"{tmpdir}/home"
    assert seen[0][3] != seen[1][3]


def test_the_process_runtime_refuses_pod_features_it_cannot_honour_by_name(run):
    """sidecars, initContainers, volumes other than an emptyDir at /tmp: named with their field path, never
    ignored (the container runtime honours emptyDir volumes anywhere)."""
    import pytest

    from kai_flows.engine.model import TemplateError

    def doc(**extra) -> dict:
        t = container("step", OK, **{k: v for k, v in extra.items() if k != "mounts"})
        if "mounts" in extra:
            t["container"]["volumeMounts"] = extra["mounts"]
        return workflow([dag("main", [{"name": "a", "template": "step"}]), t])

    with pytest.raises(TemplateError, match=r"spec.templates\[step\].sidecars: the process runtime"):
        run(doc(sidecars=[{"name": "s", "image": "busybox"}]))
    with pytest.raises(TemplateError, match=r"spec.templates\[step\].initContainers: the process runtime"):
        run(doc(initContainers=[{"name": "i", "image": "busybox"}]))
    with pytest.raises(TemplateError, match=r"volumeMounts\[data\].mountPath: '/data': the process runtime"):
        run(doc(volumes=[{"name": "data", "emptyDir": {}}], mounts=[{"name": "data", "mountPath": "/data"}]))
    with pytest.raises(TemplateError, match=r"volumeMounts\[host\]: volume 'host' is hostPath"):
        run(doc(volumes=[{"name": "host", "hostPath": {"path": "/etc"}}], mounts=[{"name": "host",
                                                                                  "mountPath": "/tmp"}]))


def _skipped_producer_doc(*, producer_default: str | None, consumer_default: str | None) -> dict:
    value_from: dict = {"path": "/tmp/out.txt"}
    if producer_default is not None:
        value_from["default"] = producer_default
    consume = container("consume", "import sys; print(sys.argv[1])", "got [{{inputs.parameters.in}}]",
                        params=[{"name": "in", **({"default": consumer_default} if consumer_default else {})}])
    return workflow([
        dag("main", [{"name": "producer", "template": "produce", "when": "false"},
                     {"name": "consumer", "template": "consume", "depends": "producer.Succeeded || producer.Skipped",
                      "arguments": {"parameters": [{"name": "in",
                                                    "value": "{{tasks.producer.outputs.parameters.msg}}"}]}}]),
        container("produce", OK, outputs={"parameters": [{"name": "msg", "valueFrom": value_from}]}),
        consume])


def test_a_skipped_producers_output_takes_its_declared_default(run):
    """test/e2e TestDAGSkippedProducerOutputDefault (functional/dag-skipped-producer-default.yaml, Argo 3.7.13+):
    a reference to a Skipped task's output resolves to the producer's valueFrom.default."""
    r = run(_skipped_producer_doc(producer_default="hello-from-producer", consumer_default=None))
    assert r.phase == "Succeeded", r.message
    assert r.node("producer").phase == "Skipped"
    assert r.node("consumer").outputs["result"] == "got [hello-from-producer]"


def test_a_skipped_producers_output_without_default_falls_back_to_the_consumers_input_default(run):
    """test/e2e TestDAGSkippedConsumerInputDefault (scope.go markAbsentOptionalArgs): an argument that is exactly
    a reference to an absent optional is not supplied, so the consumer's own input default applies."""
    r = run(_skipped_producer_doc(producer_default=None, consumer_default="fallback-from-input"))
    assert r.phase == "Succeeded", r.message
    assert r.node("consumer").outputs["result"] == "got [fallback-from-input]"


def test_an_absent_optional_with_no_default_anywhere_errors_the_consumer(run):
    """test/e2e TestDAGSkippedOutputRef (functional/dag-skipped-output-ref.yaml): no producer default and no
    consumer default: the consumer is Error ("absent optional"), and so is the workflow."""
    r = run(_skipped_producer_doc(producer_default=None, consumer_default=None))
    assert r.phase == "Error"
    consumer = r.node("consumer")
    assert consumer.phase == "Error" and "absent optional" in consumer.message
