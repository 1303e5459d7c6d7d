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
