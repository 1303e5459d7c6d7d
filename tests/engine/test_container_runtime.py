"""`--runtime container`: each step runs in its image as its pod would (security context, limits, mounts, env).

These need a container engine and the base image (`make images`); `make test-images` runs them. The pod settings
below are the ones the compiler emits (see workflow_templates/*.yaml): uid 1000, read-only root filesystem with an
emptyDir at /tmp, all capabilities dropped, no privilege escalation, a memory limit.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from kai_flows.compile import image_ref
from kai_flows.engine.model import EngineError, TemplateError
from kai_flows.policy import DEFAULT_REGISTRY, DEFAULT_TAG
from tests.engine import wf

BASE_IMAGE = image_ref("base", DEFAULT_REGISTRY, DEFAULT_TAG)


def _base_image_present() -> bool:
    from kai_flows.containers import ContainerEngineError, find_engine

    try:  # no engine (or a docker CLI whose daemon does not answer): nothing to run the images with
        return find_engine().image_exists(BASE_IMAGE)
    except ContainerEngineError:
        return False


pytestmark = [pytest.mark.images,
              pytest.mark.skipif(not _base_image_present(), reason=f"needs {BASE_IMAGE}: run `make images`")]

POD_SECURITY = {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True, "fsGroup": 1000}
CONTAINER_SECURITY = {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                      "capabilities": {"drop": ["ALL"]}}


def pod_step(name: str, code: str, *args: str, memory: str = "256Mi", **extra: Any) -> dict[str, Any]:
    """A container template in the base image with the compiler's pod settings."""
    t = wf.container(name, code, *args, **extra)
    t["container"].update(image=BASE_IMAGE, securityContext=CONTAINER_SECURITY,
                          volumeMounts=[{"name": "scratch", "mountPath": "/tmp"}],
                          resources={"limits": {"cpu": "1", "memory": memory}})
    return t


def pod_workflow(templates: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A DAG entrypoint with one task per given container template."""
    main = wf.dag("main", [{"name": t["name"], "template": t["name"]} for t in templates])
    return wf.workflow([main, *templates], securityContext=copy.deepcopy(POD_SECURITY),
                       volumes=[{"name": "scratch", "emptyDir": {}}], **spec)


def step_node(result):
    return next(n for n in result.nodes.values() if n.type == "Pod")


def test_the_step_runs_as_its_pod_user_with_its_env_and_no_capabilities(run):
    code = ("import os, sys; caps = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('CapEff'));"
            "os.makedirs(os.path.dirname(sys.argv[1]), exist_ok=True);"
            "open(sys.argv[1], 'w').write(f'{os.getuid()}:{os.getgid()}|{os.environ[\"GREETING\"]}|{caps}')")
    step = pod_step("who", code, "{{outputs.parameters.who.path}}", out_params=["who"])
    step["container"]["env"] = [{"name": "GREETING", "value": "hello from {{pod.name}}"}]
    result = run(pod_workflow([step]), runtime="container")
    assert result.phase == "Succeeded", result.message
    node = step_node(result)
    uid_gid, greeting, caps = node.outputs["parameters"][0]["value"].split("|")
    assert uid_gid == "1000:1000"
    assert greeting.startswith("hello from t-") and "{{" not in greeting  # variables substituted in env
    assert caps == "0000000000000000"  # capabilities: drop ALL


def test_a_step_writing_outside_its_declared_mounts_fails(run):
    code = "import sys; open('/tmp/fine', 'w').write('ok'); open('/opt/not-a-volume', 'w').write('no')"
    result = run(pod_workflow([pod_step("step", code)]), runtime="container")
    assert result.phase == "Failed"
    node = step_node(result)
    assert node.phase == "Failed"
    assert "Read-only file system" in node.message and "/opt/not-a-volume" in node.message


def test_a_step_over_its_memory_limit_is_recorded_as_oomkilled(run):
    code = "b = bytearray(300 * 1024 * 1024); print(len(b))"
    result = run(pod_workflow([pod_step("step", code, memory="128Mi")]), runtime="container")
    assert result.phase == "Failed"
    node = step_node(result)
    assert (node.phase, node.message) == ("Failed", "OOMKilled (exit code 137)")
    assert node.peak_memory_bytes is not None and node.peak_memory_bytes >= 0.97 * 128 * 2**20


def test_outputs_are_read_from_the_declared_paths_in_the_container(run, store, tmp_path):
    # /tmp is an emptyDir (read from the mounted folder); /data is the container's own filesystem (copied out of
    # the container after it exits, as Argo's executor does).
    code = ("import os, sys; os.makedirs('/tmp/out', exist_ok=True); open('/tmp/out/p', 'w').write('from-volume');"
            "os.makedirs('/data/model'); open('/data/model/mesh.txt', 'w').write('from-rootfs')")
    step = pod_step("step", code)
    step["container"]["securityContext"] = {"allowPrivilegeEscalation": False}  # root without caps cannot mkdir /
    step["outputs"] = {"parameters": [{"name": "p", "valueFrom": {"path": "/tmp/out/p"}}],
                       "artifacts": [{"name": "model", "path": "/data/model", "archive": {"none": {}}}]}
    doc = pod_workflow([step])
    doc["spec"]["securityContext"] = {}  # root in the image may create /data
    step_doc = doc["spec"]["templates"][1]
    step_doc["container"]["securityContext"]["runAsUser"] = 0
    result = run(doc, runtime="container")
    assert result.phase == "Succeeded", result.message
    node = step_node(result)
    assert node.outputs["parameters"] == [{"name": "p", "value": "from-volume"}]
    art = node.outputs["artifacts"][0]
    assert art["name"] == "model"
    store.download(art["s3"]["key"], tmp_path / "model")
    assert (tmp_path / "model" / "mesh.txt").read_text() == "from-rootfs"


def test_an_image_that_is_not_present_is_refused_before_anything_runs(run, tmp_path):
    step = pod_step("step", wf.OK)
    step["container"]["image"] = "registry.example.com/kai/no-such-family:latest"
    with pytest.raises(EngineError, match="no-such-family.*kai-flows images build"):
        run(pod_workflow([step]), runtime="container")
    assert not (tmp_path / "out" / "run.json").exists()


@pytest.mark.parametrize("volume, message", [
    ({"name": "scratch", "hostPath": {"path": "/etc"}}, r"volumeMounts\[scratch\]: volume 'scratch' is a hostPath"),
    ({"name": "other", "emptyDir": {}}, r"volumeMounts\[scratch\]: no volume named 'scratch'"),
])
def test_volumes_other_than_emptydir_are_refused_by_field_path(run, volume, message):
    doc = pod_workflow([pod_step("step", wf.OK)])
    doc["spec"]["volumes"] = [volume]
    with pytest.raises(TemplateError, match=r"spec\.templates\[step\]\.container\." + message):
        run(doc, runtime="container")


def test_env_from_a_secret_and_sidecars_are_refused_by_name(run):
    step = pod_step("step", wf.OK)
    step["container"]["env"] = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    with pytest.raises(TemplateError, match=r"container\.env\[TOKEN\]: valueFrom"):
        run(pod_workflow([step]), runtime="container")
    step = pod_step("step", wf.OK, sidecars=[{"name": "proxy", "image": "envoy"}])
    with pytest.raises(TemplateError, match=r"'sidecars' is not supported by the container runtime"):
        run(pod_workflow([step]), runtime="container")


def test_run_as_non_root_with_a_root_user_never_starts_the_pod(run):
    step = pod_step("step", wf.OK)
    step["container"]["securityContext"] = {**CONTAINER_SECURITY, "runAsUser": 0}
    result = run(pod_workflow([step]), runtime="container")
    node = step_node(result)
    assert (result.phase, node.phase) == ("Error", "Error")
    assert "runAsUser breaks non-root policy" in node.message


def test_the_deadline_stops_the_container(run):
    step = pod_step("step", "import time; time.sleep(60)", activeDeadlineSeconds=3)
    result = run(pod_workflow([step]), runtime="container")
    node = step_node(result)
    assert node.phase == "Failed"
    assert node.message == "Pod was active on the node longer than the specified deadline (3s)"
    assert node.wall_seconds is not None and node.wall_seconds < 30


def test_built_images_carry_their_source_revision_and_version():
    from kai_flows.containers import find_engine

    labels = find_engine().inspect_image(BASE_IMAGE)["Config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "kai/base"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels["org.opencontainers.image.revision"])
    assert labels["org.opencontainers.image.version"] and labels["org.opencontainers.image.source"]
    env = find_engine().inspect_image(BASE_IMAGE)["Config"]["Env"]
    assert not [e for e in env if e.startswith("PIP_")], env  # the build host's pip settings stay on the host


def test_an_output_leading_outside_the_steps_files_through_a_symlink_is_never_published(run):
    # /tmp/out is a link to /etc: read naively on the host, /tmp/out/hostname would be the host's /etc/hostname.
    code = "import os; os.symlink('/etc', '/tmp/out')"
    step = pod_step("step", code)
    step["outputs"] = {"artifacts": [{"name": "leak", "path": "/tmp/out/hostname", "archive": {"none": {}}}]}
    result = run(pod_workflow([step]), runtime="container")
    node = step_node(result)
    assert node.phase == "Error"
    assert "leads outside the step's own files" in node.message and not node.outputs.get("artifacts")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["spec"]["volumes"][0].update(name="../../etc"), r"volume name '\.\./\.\./etc' is not a DNS-1123"),
    (lambda d: d["spec"]["templates"][1]["container"]["volumeMounts"][0].update(subPath="../../x"),
     r"volumeMounts\[scratch\]\.subPath: '\.\./\.\./x' must be a relative path without '\.\.'"),
    (lambda d: d["spec"]["volumes"][0].update(emptyDir={"medium": "Memory"}), r"emptyDir medium 'Memory'"),
    (lambda d: d["spec"]["securityContext"].update(sysctls=[{"name": "a", "value": "1"}]),
     r"pod\.securityContext\.sysctls is not applied"),
])
def test_pod_fields_that_cannot_be_honoured_are_refused_by_name(run, change, message):
    doc = pod_workflow([pod_step("step", wf.OK)])
    change(doc)
    with pytest.raises(TemplateError, match=message):
        run(doc, runtime="container")


def test_a_steps_own_exit_code_125_is_its_failure_not_the_engines(run):
    result = run(pod_workflow([pod_step("step", "import sys; sys.exit(125)")]), runtime="container")
    node = step_node(result)
    assert (node.phase, node.message) == ("Failed", "Error (exit code 125)")


def test_an_emptydir_over_its_size_limit_fails_the_pod_as_an_eviction(run):
    doc = pod_workflow([pod_step("step", "open('/tmp/big', 'wb').write(b'x' * 3 * 1024 * 1024)")])
    doc["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}]
    node = step_node(run(doc, runtime="container"))
    assert (node.phase, node.message) == ("Failed", 'Usage of EmptyDir volume "scratch" exceeds the limit "1Mi".')
