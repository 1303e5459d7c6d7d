"""What the cluster manifests must declare for Kai's hardened namespace.

- a Namespace enforces, audits and warns about Pod Security `restricted`, and a NetworkPolicy in it fences step
  pods: default-deny ingress and egress, every egress rule limited to named ports;
- the pods of a workload (the coordinator's Deployment, its migration Job) are fenced too, by a NetworkPolicy of
  the linted manifests that selects them (checked where the linted manifests hold NetworkPolicies of its
  namespace), and no workload's pods carry the step label (the step policy would fence them as steps);
- an artifact repository reaches S3 over TLS unless the ConfigMap opts out by name;
- the coordinator's Role grants exactly the verbs its Argo backend uses (its API_PERMISSIONS table).
"""

from __future__ import annotations

from typing import Any

import yaml

from kai_flows.lint.documents import Document
from kai_flows.lint.pod_hardening import WORKLOAD_POD_SPECS, workload_pod
from kai_flows.lint.problem import Reporter
from kai_flows.lint.spec_view import as_dict, as_list
from kai_flows.policy import INSECURE_REPOSITORY_ANNOTATION, POD_SECURITY_LEVEL, STEP_LABEL

PSA_MODES = ("enforce", "audit", "warn")
COORDINATOR_ROLE = "kai-coordinator"


def check_cluster_hardening(d: Document, docs: list[Document], report: Reporter) -> None:
    if d.kind == "Namespace":
        _pod_security(d, report)
        _fenced(d, docs, report)
    elif d.kind == "NetworkPolicy":
        _network_policy(d.obj, report)
    elif d.kind == "ConfigMap":
        _artifact_repository_tls(d.obj, report)
    elif d.kind == "Role" and d.name == COORDINATOR_ROLE:
        _coordinator_role(d.obj, report)
    if workload_pod(d.obj) is not None:
        _workload_fenced(d, docs, report)


def _pod_security(d: Document, report: Reporter) -> None:
    labels = as_dict(as_dict(d.obj.get("metadata")).get("labels"))
    for mode in PSA_MODES:
        key = f"pod-security.kubernetes.io/{mode}"
        if labels.get(key) != POD_SECURITY_LEVEL:
            report(("metadata", "labels", key), f"namespace '{d.name}' does not {mode} Pod Security "
                                                f"'{POD_SECURITY_LEVEL}': set the label {key}: {POD_SECURITY_LEVEL}")


# ---------------------------------------------------------------------------------------------- network


def selects_steps(policy: dict[str, Any]) -> bool:
    """Whether a NetworkPolicy's podSelector takes in every pod carrying the step label."""
    selector = as_dict(as_dict(policy.get("spec")).get("podSelector"))
    labels, exprs = as_dict(selector.get("matchLabels")), as_list(selector.get("matchExpressions"))
    if not labels and not exprs:
        return True  # {} selects every pod of the namespace
    return not labels and all(as_dict(e) == {"key": STEP_LABEL, "operator": "Exists"} for e in exprs)


def _fences_steps(policy: dict[str, Any]) -> bool:
    types = {str(t) for t in as_list(as_dict(policy.get("spec")).get("policyTypes"))}
    return selects_steps(policy) and {"Ingress", "Egress"} <= types


def _fenced(d: Document, docs: list[Document], report: Reporter) -> None:
    for other in docs:
        if (other.kind == "NetworkPolicy" and as_dict(other.obj.get("metadata")).get("namespace") == d.name
                and _fences_steps(other.obj)):
            return
    report(("metadata", "name"), f"no NetworkPolicy in namespace '{d.name}' fences step pods (podSelector on the "
                                 f"label '{STEP_LABEL}' with policyTypes Ingress and Egress): a step could reach "
                                 "any address")


def selects(selector: dict[str, Any], labels: dict[str, Any]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects a pod with `labels`."""
    if any(labels.get(k) != v for k, v in as_dict(selector.get("matchLabels")).items()):
        return False
    for e in as_list(selector.get("matchExpressions")):
        e = as_dict(e)
        key, op, values = e.get("key"), e.get("operator"), [str(v) for v in as_list(e.get("values"))]
        present = key in labels
        if not {"In": present and str(labels.get(key)) in values, "NotIn": not present or str(labels[key]) not in
                values, "Exists": present, "DoesNotExist": not present}.get(str(op), False):
            return False
    return True


def _workload_fenced(d: Document, docs: list[Document], report: Reporter) -> None:
    meta = as_dict(d.obj.get("metadata"))
    label_path = (*WORKLOAD_POD_SPECS[d.kind][:-1], "metadata", "labels")  # the pod template's (a Pod's own)
    node: Any = d.obj
    for key in label_path:
        node = as_dict(node).get(key)
    labels = as_dict(node)
    if STEP_LABEL in labels:
        report((*label_path, STEP_LABEL), f"the pods carry the step label '{STEP_LABEL}', so the step "
                                          "NetworkPolicy fences them as steps; give them a policy of their own")
    policies = [o.obj for o in docs if o.kind == "NetworkPolicy"
                and as_dict(o.obj.get("metadata")).get("namespace") == meta.get("namespace")]
    if not policies:
        return  # linted alone: the namespace's policies are not in view
    for p in policies:
        spec = as_dict(p.get("spec"))
        types = {str(t) for t in as_list(spec.get("policyTypes"))}
        if {"Ingress", "Egress"} <= types and selects(as_dict(spec.get("podSelector")), labels):
            return
    report(label_path, f"no NetworkPolicy of the linted manifests selects the pods of {d.label} with "
                       "policyTypes Ingress and Egress: they could reach, and be reached from, any address")


def _network_policy(obj: dict[str, Any], report: Reporter) -> None:
    spec = as_dict(obj.get("spec"))
    for i, rule in enumerate(as_list(spec.get("egress"))):
        if not as_list(as_dict(rule).get("ports")):
            report(("spec", "egress", i, "ports"), "egress rule names no ports, so it allows every port: name the "
                                                   "ports the pods need")
    if selects_steps(obj) and as_list(spec.get("ingress")):
        report(("spec", "ingress"), "step pods serve nothing: a NetworkPolicy selecting them allows no ingress")


# ---------------------------------------------------------------------------------------------- artifacts


def _artifact_repository_tls(obj: dict[str, Any], report: Reporter) -> None:
    annotations = as_dict(as_dict(obj.get("metadata")).get("annotations"))
    if annotations.get(INSECURE_REPOSITORY_ANNOTATION) == "true":
        return
    for key, text in as_dict(obj.get("data")).items():
        try:
            repo = as_dict(yaml.safe_load(text)) if isinstance(text, str) else {}
        except yaml.YAMLError:
            continue  # not YAML: not an artifact repository
        if as_dict(repo.get("s3")).get("insecure") is True:
            report(("data", key), f"artifact repository '{key}' sets s3.insecure: true: artifacts and S3 "
                                  "credentials would travel in clear text; use TLS, or opt out by name "
                                  f"(`--insecure-artifact-repository`, annotation {INSECURE_REPOSITORY_ANNOTATION}: "
                                  "\"true\")")


# ---------------------------------------------------------------------------------------------- RBAC


def _grants(rules: list[Any]) -> set[tuple[str, str, str]]:
    return {(str(g), str(r), str(v)) for rule in rules for g in as_list(as_dict(rule).get("apiGroups"))
            for r in as_list(as_dict(rule).get("resources")) for v in as_list(as_dict(rule).get("verbs"))}


def _coordinator_role(obj: dict[str, Any], report: Reporter) -> None:
    from kai_flows.ledger.argo_backend import API_PERMISSIONS  # imported here: only cluster manifests need it

    needed = {(g, r, v) for (g, r), verbs in API_PERMISSIONS.items() for v in verbs}
    granted = _grants(as_list(obj.get("rules")))
    for g, r, v in sorted(granted - needed):
        report(("rules",), f"grants '{v}' on {r} ({g or 'core'}), which the coordinator never calls: least privilege "
                           "is kai_flows.ledger.argo_backend.API_PERMISSIONS")
    for g, r, v in sorted(needed - granted):
        report(("rules",), f"lacks '{v}' on {r} ({g or 'core'}), which the coordinator's Argo backend calls")
