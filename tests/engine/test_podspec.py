"""How a container template's pod fields combine (workflowpod.go and Kubernetes' own precedence)."""

from kai_flows.engine.load import load_workflow
from tests.engine import wf


def _pod(template_extra=None, container_extra=None, **spec):
    t = wf.container("step", wf.OK, **(template_extra or {}))
    t["container"].update(container_extra or {})
    doc = wf.workflow([wf.dag("main", [{"name": "s", "template": "step"}]), t], **spec)
    return load_workflow(doc).templates["step"].pod


def test_the_template_security_context_replaces_the_workflows_and_the_containers_fields_win():
    # Argo: tmpl.SecurityContext, else spec.securityContext (whole object); Kubernetes: container fields win.
    pod = _pod({"securityContext": {"runAsUser": 2000}}, {"securityContext": {"runAsGroup": 3000}},
               securityContext={"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000})
    assert (pod.security.run_as_user, pod.security.run_as_group, pod.security.fs_group) == (2000, 3000, None)
    pod = _pod(None, {"securityContext": {"runAsUser": 0}}, securityContext={"runAsUser": 1000, "fsGroup": 7})
    assert (pod.security.run_as_user, pod.security.fs_group) == (0, 7)


def test_unset_privilege_escalation_is_allowed_as_in_kubernetes():
    assert _pod().security.allow_privilege_escalation is True
    assert _pod(None, {"securityContext": {"allowPrivilegeEscalation": False}}).security.allow_privilege_escalation \
        is False


def test_template_volumes_are_added_to_the_workflows():
    pod = _pod({"volumes": [{"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}}]}, None,
               volumes=[{"name": "scratch", "emptyDir": {}}, {"name": "creds", "secret": {"secretName": "s"}}])
    assert [(v.name, v.kind, v.size_limit) for v in pod.volumes] == [
        ("scratch", "emptyDir", ""), ("creds", "secret", ""), ("cache", "emptyDir", "1Gi")]


def test_env_from_the_cluster_and_sidecars_are_marked():
    pod = _pod({"sidecars": [{"name": "x", "image": "y"}]},
               {"env": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
                "envFrom": [{"secretRef": {"name": "s"}}]})
    assert [(e.name, e.value, e.source) for e in pod.env] == [
        ("A", "1", ""), ("B", "", "valueFrom"), ("<envFrom[0]>", "", "envFrom")]
    assert pod.cluster_features == ("spec.templates[step].sidecars",)


def test_a_malformed_security_context_is_a_template_error_naming_the_template():
    import pytest

    from kai_flows.engine.model import TemplateError

    with pytest.raises(TemplateError, match=r"spec\.templates\[\d\]\.container\.securityContext\.runAsUser: "
                                            r"expected integer, got 'root'"):
        _pod(None, {"securityContext": {"runAsUser": "root"}})


# podSpecPatch on the main container's resources (workflowpod.go ApplyPodSpecPatch: workflow's, then template's).
BIG = "b = bytearray(120 * 2**20); b[::4096] = b'x' * len(b[::4096])"


def _sized_doc(mem: str, template_patch: str, **spec):
    sized = wf.container("big", BIG, params=[{"name": "mem", "default": "64Mi"}], podSpecPatch=template_patch)
    sized["container"]["resources"] = {"requests": {"memory": "64Mi"}, "limits": {"memory": "64Mi", "cpu": "8"}}
    return wf.workflow([wf.dag("main", [{"name": "big", "template": "big", "arguments": {
        "parameters": [{"name": "mem", "value": mem}]}}]), sized], **spec)


PATCH = ('{"containers":[{"name":"main","resources":{"requests":{"memory":"{{inputs.parameters.mem}}"},'
         '"limits":{"memory":"{{inputs.parameters.mem}}"}}}]}')


def test_a_template_patch_sizes_the_container_from_its_inputs_per_pod(run, tmp_path):
    roomy = run(_sized_doc("4Gi", PATCH))  # room to spare: 690 MiB was measured in a full suite
    assert roomy.phase == "Succeeded" and not roomy.node("big").over_memory_limit
    tight = run(_sized_doc("64Mi", PATCH), out=tmp_path / "tight")
    assert tight.node("big").over_memory_limit  # the same template with the default: over its limit


def test_the_template_patch_wins_over_the_workflow_patch_and_yaml_is_read_too():
    spec_patch = "containers:\n- name: main\n  resources:\n    limits: {memory: 1Gi, cpu: '2'}\n"
    t = wf.container("step", wf.OK, podSpecPatch='{"containers":[{"name":"main","resources":{"limits":'
                                                  '{"memory":"256Mi"}}}]}')
    t["container"]["resources"] = {"limits": {"memory": "64Mi", "cpu": "1"}}
    doc = wf.workflow([wf.dag("main", [{"name": "s", "template": "step"}]), t], podSpecPatch=spec_patch)
    tmpl = load_workflow(doc).templates["step"]
    assert (tmpl.memory_limit, tmpl.cpu_limit) == (256 * 2**20, 2.0)


def test_a_patch_deleting_the_gpu_request_leaves_a_cpu_step():
    t = wf.container("gpu", wf.OK)
    t["container"]["resources"] = {"limits": {"nvidia.com/gpu": "1"}, "requests": {"nvidia.com/gpu": "1"}}
    patch = '{"containers":[{"name":"main","resources":{"limits":{"nvidia.com/gpu":null},' \
            '"requests":{"nvidia.com/gpu":null}}}]}'
    doc = wf.workflow([wf.dag("main", [{"name": "s", "template": "gpu"}]), t], podSpecPatch=patch)
    assert load_workflow(doc).templates["gpu"].gpus == 0


def test_a_request_over_the_patched_limit_is_refused_as_kubernetes_refuses_the_pod(run):
    patch = '{"containers":[{"name":"main","resources":{"requests":{"memory":"{{inputs.parameters.mem}}"}}}]}'
    r = run(_sized_doc("1Gi", patch))
    assert r.phase != "Succeeded"
    assert "must be less than or equal to memory limit of 64Mi" in r.node("big").message


def test_a_malformed_patch_or_quantity_is_an_error_naming_the_template(run):
    import pytest

    from kai_flows.engine.model import TemplateError

    t = wf.container("step", wf.OK, podSpecPatch='{"containers": [')
    with pytest.raises(TemplateError, match=r"spec\.templates\[step\]: podSpecPatch is not valid JSON or YAML"):
        load_workflow(wf.workflow([wf.dag("main", [{"name": "s", "template": "step"}]), t]))
    r = run(_sized_doc("lots", PATCH))
    assert "'lots' is not a Kubernetes quantity" in r.node("big").message
