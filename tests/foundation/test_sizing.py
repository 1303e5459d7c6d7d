"""Steps sized per job: `@step(memory_max=...)`, a task's `memory=`, the podSpecPatch Argo applies, the planner."""

import json
import subprocess
import sys

import pytest

from kai_flows.compile import compile_pipeline
from kai_flows.engine import run_pipeline
from kai_flows.lint import Document, lint_documents
from kai_flows.pipeline import Pipeline, PipelineError
from kai_flows.step import step
from kai_steps.plan import plan_reconstruction
from kai_steps.sizing import JobTooLargeError, planned_memory
from tests.conftest import REPO
from tests.foundation.steps_fixture import count_lines, plan_memory, sized_work


def _sized_pipeline(photos: int = 100) -> Pipeline:
    p = Pipeline("sized")
    plan = p.task(plan_memory, photos=photos)
    p.task(sized_work, memory=plan["memory"])
    return p


def test_a_sized_step_compiles_to_a_memory_parameter_applied_through_pod_spec_patch():
    wt = compile_pipeline(_sized_pipeline())
    t = {t["name"]: t for t in wt["spec"]["templates"]}["sized-work"]
    assert {"name": "kai-memory", "default": "64Mi"} == {k: v for k, v in t["inputs"]["parameters"][-1].items()
                                                         if k != "description"}
    patch = json.loads(t["podSpecPatch"])
    main = next(c for c in patch["containers"] if c["name"] == "main")
    assert main["resources"] == {"limits": {"memory": "{{inputs.parameters.kai-memory}}"},
                                 "requests": {"memory": "{{inputs.parameters.kai-memory}}"}}
    wait = next(c for c in patch["containers"] if c["name"] == "wait")
    assert wait["securityContext"]["allowPrivilegeEscalation"] is False  # the executor lock-down stays
    task = next(x for x in t_dag(wt) if x["template"] == "sized-work")
    assert {"name": "kai-memory", "value": "{{tasks.plan-memory.outputs.parameters.memory}}"} in \
        task["arguments"]["parameters"]
    assert [str(p) for p in lint_documents([Document("sized.yaml", 0, wt)])] == []


def t_dag(wt):
    return next(t for t in wt["spec"]["templates"] if t["name"] == "main")["dag"]["tasks"]


def test_the_engine_gives_the_pod_the_planned_memory(seaweed_server, tmp_path):
    store = seaweed_server.store("sizing-run")
    result = run_pipeline(compile_pipeline(_sized_pipeline(photos=100)), store=store, out=tmp_path / "out",
                          cache=tmp_path / "cache", progress=False)
    assert result.phase == "Succeeded", result.message
    assert result.node("sized-work").memory_limit_bytes == 164 * 2**20


def test_memory_on_an_unsized_step_or_beyond_its_max_is_refused_by_name():
    p = Pipeline("t")
    with pytest.raises(PipelineError, match=r"step count-lines has a fixed memory \(64Mi\); declare "
                                            r"@step\(memory_max=...\)"):
        p.task(count_lines, text=p.input_artifact("doc"), memory="1Gi")
    with pytest.raises(PipelineError, match=r"'memory': 2Gi is not above 0 and at most 1Gi"):
        p.task(sized_work, memory="2Gi")
    with pytest.raises(PipelineError, match=r"'lots' is not a Kubernetes quantity"):
        p.task(sized_work, memory="lots")

    @step(image="quality", memory="2Gi", memory_max="1Gi")
    def upside_down() -> None:
        return None

    p = Pipeline("t")
    p.task(upside_down)
    with pytest.raises(PipelineError, match="step upside-down: memory_max 1Gi is below its memory 2Gi"):
        compile_pipeline(p)


def test_planning_needs_no_kubernetes_client_and_declaring_pipelines_no_step_library():
    """Step images carry no Kubernetes client, and the coordinator's image, which declares every pipeline, no
    torch or OpenCV: the plan must run, and the pipelines build, without them."""
    code = """
import sys
for blocked in ("kubernetes", "torch", "cv2", "open3d", "pycolmap", "xatlas"):
    sys.modules[blocked] = None  # importing it raises ImportError
from kai_steps.plan import plan_reconstruction
print(plan_reconstruction("standard", photos=100).point_cloud_memory)
from kai_flows.pipelines import PIPELINES
print(sorted(name for name, build in PIPELINES.items() if build()))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines()[0] == "6656Mi" and "reconstruction" in out.stdout


def test_the_plan_grows_with_the_job_and_refuses_what_no_pod_may_get():
    small, large = (plan_reconstruction("standard", photos=n) for n in (10, 300))
    keys = ("camera_poses_memory", "point_cloud_memory")
    mib = {k: int(getattr(small, k).removesuffix("Mi")) for k in keys}
    big = {k: int(getattr(large, k).removesuffix("Mi")) for k in keys}
    assert all(mib[k] < big[k] for k in keys)
    assert mib["point_cloud_memory"] <= 2048, "a 10-photo job does not reserve a large job's memory"
    with pytest.raises(JobTooLargeError, match=r"point-cloud would need about .* GiB for 2000 photos at 1600 px, "
                                               r"above its maximum of 32Gi"):
        planned_memory("point_cloud", 2000, 1600)
