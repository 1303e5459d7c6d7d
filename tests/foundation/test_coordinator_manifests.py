"""The coordinator's cluster manifests (issue 12 item 4), through the public API: `cluster_manifests`, the
rendered YAML, `kai-flows lint`. Each test reads the contract with the coordinator process (kai_flows/cluster/
coordinator.py's docstring) off the objects, and lint is shown to refuse what would break it.

What these do NOT verify: a real API server admitting the objects (the schemas are Kubernetes 1.37's, the
Prometheus Operator's CRDs as shipped), Prometheus evaluating the alert expressions, Grafana loading the dashboard.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from kai_flows.argo.units import parse_quantity
from kai_flows.cluster import coordinator as c
from kai_flows.cluster import dashboard, monitoring
from kai_flows.compile import cluster_manifests, compile_all
from kai_flows.lint import Problem, lint_paths
from kai_flows.lint.cluster_hardening import selects
from kai_flows.pipelines import PIPELINES
from kai_flows.policy import STEP_LABEL, build_policy, load_policy
from kai_flows.service.config import CoordinatorConfig
from tests.conftest import REPO

IMAGES = REPO / "images"


@pytest.fixture(scope="module")
def cluster() -> dict[str, dict[str, Any]]:
    """Every cluster object by `Kind/name`."""
    return {f"{d['kind']}/{d['metadata']['name']}": d for docs in cluster_manifests().values() for d in docs}


def _one(cluster: dict[str, dict[str, Any]], kind: str) -> dict[str, Any]:
    [obj] = [o for key, o in cluster.items() if key.startswith(f"{kind}/")]
    return obj


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def _write(path: Path, *docs: dict[str, Any]) -> Path:
    path.write_text("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs))
    return path


def _messages(problems: list[Problem]) -> list[str]:
    return [f"{p.object}: {p.field}: {p.message}" for p in problems]


# ---------------------------------------------------------------------------------------------- the Deployment


def test_the_deployment_runs_the_coordinator_as_the_contract_says(cluster) -> None:
    deployment = cluster["Deployment/kai-coordinator"]
    pod = _pod(deployment)
    [container] = pod["containers"]
    assert container["image"] == "registry.example.com/kai/coordinator:0.1.0"
    assert container["command"] + container["args"] == [
        "kai-flows", "coordinator", "--backend", "argo", "--config", "/etc/kai/coordinator/coordinator.yaml",
        "--api-port", "8080", "--metrics-port", "8081"]
    env = _env(container)
    assert env["KAI_DATABASE_URL"] == {"secretKeyRef": {"name": "kai-ledger-database", "key": "url"}}
    assert env["KAI_API_TOKEN"] == {"secretKeyRef": {"name": "kai-coordinator-api", "key": "token"}}
    assert env["KAI_CLAIMER"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # The Argo backend records outputs from S3: the artifact repository's endpoint, bucket and credentials.
    assert env["KAI_S3_ENDPOINT"] == "https://minio.kai-ml.svc.cluster.local:9000"
    assert env["KAI_S3_ACCESS_KEY"] == {"secretKeyRef": {"name": "kai-s3-credentials", "key": "accessKey"}}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"api": 8080, "metrics": 8081}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
    assert {"/etc/kai/coordinator": True, "/tmp": None} == {m["mountPath"]: m.get("readOnly")
                                                            for m in container["volumeMounts"]}
    assert all(container["resources"][s].get(r) for s in ("requests", "limits") for r in ("cpu", "memory"))


def test_the_deployment_is_highly_available_and_hardened(cluster) -> None:
    policy = load_policy()
    deployment = cluster["Deployment/kai-coordinator"]
    pod = _pod(deployment)
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert pod["serviceAccountName"] == "kai-coordinator" and "ServiceAccount/kai-coordinator" in cluster
    assert pod["priorityClassName"] == "system-critical"
    orchestration = policy.pool("orchestration")
    assert pod["nodeSelector"] == orchestration.node_selector and pod["tolerations"] == orchestration.tolerations()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert {v["name"]: v.get("emptyDir") for v in pod["volumes"]}["tmp"] == {"sizeLimit": "256Mi"}
    by_host = next(t for t in pod["topologySpreadConstraints"] if t["topologyKey"] == "kubernetes.io/hostname")
    assert by_host["whenUnsatisfiable"] == "DoNotSchedule" and by_host["maxSkew"] == 1
    assert selects(by_host["labelSelector"], deployment["spec"]["template"]["metadata"]["labels"])


def test_the_config_map_is_the_coordinator_config_and_a_change_rolls_the_deployment(cluster) -> None:
    config = cluster["ConfigMap/kai-coordinator-config"]
    assert config["data"] == {"coordinator.yaml": CoordinatorConfig.from_policy(load_policy()).to_yaml()}
    parsed = CoordinatorConfig.parse(yaml.safe_load(config["data"]["coordinator.yaml"]))
    assert set(parsed.queues) == {"interactive", "batch", "maintenance"} and parsed.tiers and parsed.quality_tiers
    pod = _pod(cluster["Deployment/kai-coordinator"])
    assert {"name": "config", "configMap": {"name": "kai-coordinator-config"}} in pod["volumes"]
    checksum = cluster["Deployment/kai-coordinator"]["spec"]["template"]["metadata"]["annotations"][
        c.CHECKSUM_ANNOTATION]
    assert checksum == c.config_checksum(config["data"])
    other = build_policy('{"interactive":{"concurrency":8,"weight":10},"batch":{"concurrency":10,"weight":5},'
                         '"maintenance":{"concurrency":2,"weight":1}}')
    changed = {d["kind"]: d for d in cluster_manifests(other)["12-coordinator.yaml"]}["Deployment"]
    assert changed["spec"]["template"]["metadata"]["annotations"][c.CHECKSUM_ANNOTATION] != checksum


def test_service_autoscaler_and_disruption_budget(cluster) -> None:
    deployment = cluster["Deployment/kai-coordinator"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    [container] = _pod(deployment)["containers"]
    service = cluster["Service/kai-coordinator"]
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"api": (8080, "api"), "metrics": (8081, "metrics")}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= {p["name"] for p in container["ports"]}

    hpa = cluster["HorizontalPodAutoscaler/kai-coordinator"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "kai-coordinator"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]

    pdb = cluster["PodDisruptionBudget/kai-coordinator"]
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["minAvailable"] == 2
    assert selects(pdb["spec"]["selector"], pod_labels)
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]  # a node drain can always evict one


# ---------------------------------------------------------------------------------------------- the migration Job


def test_the_migration_job_runs_migrate_and_is_named_by_its_migrations_and_image(cluster) -> None:
    job = _one(cluster, "Job")
    deployment = cluster["Deployment/kai-coordinator"]
    pod = _pod(job)
    [container] = pod["containers"]
    [coordinator] = _pod(deployment)["containers"]
    assert container["image"] == coordinator["image"]
    assert container["command"] + container["args"] == ["kai-flows", "migrate"]
    assert _env(container) == {"KAI_DATABASE_URL": {"secretKeyRef": {"name": "kai-ledger-database", "key": "url"}}}
    spec = job["spec"]
    assert spec["backoffLimit"] == 2 and spec["ttlSecondsAfterFinished"] > 0 and spec["activeDeadlineSeconds"] > 0
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Its pods are not the coordinator's: not behind the Service, not counted by the PDB or the HPA's Deployment.
    job_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not selects(deployment["spec"]["selector"], job_labels)
    assert not selects({"matchLabels": cluster["Service/kai-coordinator"]["spec"]["selector"]}, job_labels)

    from kai_flows.ledger.migrate import discover

    files = [(f.name, f.checksum) for f in discover()]
    name = job["metadata"]["name"]
    assert name == c.migration_job_name(spec, files) == c.migration_job_name(spec)
    assert name.startswith("kai-coordinator-migrate-") and len(name) <= 52  # room for the pods' suffixes
    assert c.migration_job_name(spec, [*files, ("999_next.sql", "0" * 64)]) != name  # a new migration: a new Job
    other = cluster_manifests(registry="registry.example.com", tag="0.2.0")["11-coordinator-migrations.yaml"]
    assert next(d for d in other if d["kind"] == "Job")["metadata"]["name"] != name  # a new image: a new Job
    assert next(d for d in cluster_manifests()["11-coordinator-migrations.yaml"]
                if d["kind"] == "Job")["metadata"]["name"] == name  # the same ones: the same (completed) Job


# ---------------------------------------------------------------------------------------------- network, quota


def test_network_policies_fence_the_coordinator_and_the_steps_policy_leaves_it_alone(cluster) -> None:
    pod_labels = cluster["Deployment/kai-coordinator"]["spec"]["template"]["metadata"]["labels"]
    job_labels = _one(cluster, "Job")["spec"]["template"]["metadata"]["labels"]
    steps = cluster["NetworkPolicy/kai-steps"]["spec"]
    assert not selects(steps["podSelector"], pod_labels) and not selects(steps["podSelector"], job_labels)
    assert STEP_LABEL not in pod_labels and STEP_LABEL not in job_labels

    def ports(rules: list[dict[str, Any]]) -> set[int]:
        return {p["port"] for r in rules for p in r["ports"]}

    policy = cluster["NetworkPolicy/kai-coordinator"]["spec"]
    assert selects(policy["podSelector"], pod_labels) and not selects(policy["podSelector"], job_labels)
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    assert ports(policy["ingress"]) == {8080, 8081}
    assert ports(policy["egress"]) == {53, 5432, 443, 6443, 9000}  # DNS, PostgreSQL, Kubernetes API, S3
    migrate = cluster["NetworkPolicy/kai-coordinator-migrate"]["spec"]
    assert selects(migrate["podSelector"], job_labels) and not selects(migrate["podSelector"], pod_labels)
    assert "ingress" not in migrate and ports(migrate["egress"]) == {53, 5432}


def test_quota_and_limit_range_fit_every_step_and_the_coordinator_at_its_maximum(cluster) -> None:
    policy = load_policy()
    quota = cluster["ResourceQuota/kai-flows"]["spec"]["hard"]
    [limits] = cluster["LimitRange/kai-flows"]["spec"]["limits"]
    steps = [t.step.spec for build in PIPELINES.values() for t in build().tasks.values()]
    q = lambda v: parse_quantity(v)  # noqa: E731
    for s in steps:  # every step is admitted by the LimitRange ...
        assert q(s.cpu_limit or s.cpu) <= q(limits["max"]["cpu"]) and q(s.memory_limit or s.memory) <= q(
            limits["max"]["memory"])
    workflows = sum(x.concurrency for x in policy.queues.values())  # ... and full admission of the largest fits
    coordinator = c.MAX_REPLICAS * q(c.RESOURCES["requests"]["cpu"])
    assert q(quota["requests.cpu"]) >= workflows * max(q(s.cpu) for s in steps) + coordinator
    assert q(quota["requests.memory"]) >= workflows * max(q(s.memory) for s in steps)
    assert int(quota["requests.nvidia.com/gpu"]) == workflows * max(s.gpu for s in steps)
    assert int(quota["pods"]) > workflows + c.MAX_REPLICAS
    assert not any(k.startswith("limits.") for k in quota)  # requests only (kai_flows/cluster/quota.py says why)
    assert set(limits["defaultRequest"]) == set(limits["default"]) == {"cpu", "memory"}  # for Argo's executors


# ---------------------------------------------------------------------------------------------- monitoring


def test_every_metric_of_the_contract_is_one_the_coordinator_registers() -> None:
    from kai_flows.ledger.metrics import LedgerMetrics
    from kai_flows.service.api import ApiMetrics

    registry = CollectorRegistry()
    ledger, api = LedgerMetrics(registry), ApiMetrics(registry)
    registered = {m._name: (m._type, tuple(m._labelnames)) for m in [*vars(ledger).values(), *vars(api).values()]
                  if hasattr(m, "_labelnames")}
    # prometheus_client names a counter's family without `_total`.
    registered = {(n + "_total" if kind == "counter" else n): (kind, labels)
                  for n, (kind, labels) in registered.items()}
    assert registered == monitoring.COORDINATOR_METRICS


def test_service_monitor_scrapes_the_metrics_port_of_the_service(cluster) -> None:
    monitor = cluster["ServiceMonitor/kai-coordinator"]
    service = cluster["Service/kai-coordinator"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert selects(monitor["spec"]["selector"], service["metadata"]["labels"])
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("metrics", "/metrics")
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_alerts_cover_wait_targets_failures_down_and_held_on_exported_metrics(cluster) -> None:
    rule = cluster["PrometheusRule/kai-coordinator"]
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    config = CoordinatorConfig.from_policy(load_policy())
    waits = {r["labels"]["queue_class"]: r["expr"] for r in rules if r["alert"] == "KaiQueueWaitOverTarget"}
    assert set(waits) == set(config.queues)
    for queue, expr in waits.items():
        assert f'queue_class="{queue}"' in expr and "kai_queue_wait_seconds_bucket" in expr
        assert expr.endswith(f"> {config.queues[queue].wait_target_seconds:g}")
    alerts = {r["alert"]: r for r in rules}
    assert "kai_job_failures_total" in alerts["KaiJobFailureRateHigh"]["expr"]
    assert alerts["KaiCoordinatorDown"]["expr"] == 'absent(up{job="kai-coordinator",namespace="kai-ml"} == 1)'
    assert alerts["KaiCoordinatorDown"]["labels"]["severity"] == "critical"
    assert "kai_admission_held" in alerts["KaiAdmissionHeld"]["expr"]
    known = monitoring.exported_series() | set(monitoring.CLUSTER_METRICS)
    for r in rules:
        assert monitoring.metric_names(r["expr"]) <= known, (r["alert"], r["expr"])
        assert r["for"] and r["annotations"]["summary"] and r["annotations"]["description"]


def test_metric_names_reads_promql() -> None:
    expr = ('histogram_quantile(0.9, sum by (le, queue_class) (rate(kai_queue_wait_seconds_bucket{namespace='
            '"$namespace",queue_class=~"inter.*"}[$__rate_interval]))) / ignoring(x) max(kai_jobs_running) > 1e3 '
            'and on (pod) changes(up[5m] offset 1h)')
    assert monitoring.metric_names(expr) == {"kai_queue_wait_seconds_bucket", "kai_jobs_running", "up"}
    assert monitoring.metric_names("sum(rate(kai_job_failure_total[5m]))") - monitoring.exported_series() == {
        "kai_job_failure_total"}  # a misspelt metric is caught


def test_the_dashboard_is_valid_json_of_panels_on_exported_metrics(cluster) -> None:
    config_map = cluster[f"ConfigMap/{dashboard.CONFIGMAP}"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    model = json.loads(config_map["data"]["kai-coordinator.json"])
    assert model["uid"] == "kai-coordinator" and model["schemaVersion"] >= 36
    panels = [p for p in model["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in model["panels"]}) == len(model["panels"])
    cells = [(x, y) for p in model["panels"] for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
             for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])]
    assert len(cells) == len(set(cells)), "panels overlap"
    known = monitoring.exported_series() | set(monitoring.CLUSTER_METRICS)
    used: set[str] = set()
    for p in panels:
        assert p["targets"], p["title"]
        for t in p["targets"]:
            names = monitoring.metric_names(t["expr"])
            assert names and names <= known, (p["title"], t["expr"])
            used |= names
    titles = " | ".join(p["title"] for p in panels).lower()
    for wanted in ("queue depth", "in flight", "replicas", "cpu", "autoscaler", "scaling events", "admissions",
                   "queue wait p90", "admission held", "api latency"):
        assert wanted in titles, wanted
    assert {"kai_queue_depth", "kai_jobs_in_flight", "kai_jobs_admitted_total", "kai_queue_wait_seconds_bucket",
            "kai_admission_held", "kai_api_request_duration_seconds_bucket", "kube_deployment_status_replicas",
            "kube_horizontalpodautoscaler_status_desired_replicas", "container_cpu_usage_seconds_total"} <= used


# ---------------------------------------------------------------------------------------------- lint


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("compiled")
    compile_all(out)
    return out


def test_the_rendered_cluster_lints_clean_and_a_broken_service_monitor_does_not(compiled: Path,
                                                                                tmp_path: Path) -> None:
    assert lint_paths([compiled / "cluster"], images_dir=IMAGES) == []
    monitoring_file = compiled / "cluster" / "13-coordinator-monitoring.yaml"
    monitor, rule = [d for d in yaml.safe_load_all(monitoring_file.read_text()) if d]
    bad = copy.deepcopy(monitor)
    bad["spec"]["endpoints"][0]["scrapeIntervall"] = "30s"  # misspelt
    bad["spec"]["endpoints"][0]["port"] = 8081  # a port *name* is a string
    bad_rule = copy.deepcopy(rule)
    bad_rule["spec"]["groups"][0]["rules"][0]["severity"] = "warning"  # belongs under labels
    problems = lint_paths([_write(tmp_path / "monitoring.yaml", bad, bad_rule)], images_dir=IMAGES)
    assert _messages(problems) == [
        "ServiceMonitor/kai-coordinator: spec.endpoints[0].scrapeIntervall: unknown field",
        "ServiceMonitor/kai-coordinator: spec.endpoints[0].port: expected string, got 8081",
        "PrometheusRule/kai-coordinator: spec.groups[0].rules[0].severity: unknown field",
    ]
    unknown_kind = {**monitor, "apiVersion": "monitoring.coreos.com/v1alpha1"}
    [problem] = lint_paths([_write(tmp_path / "other.yaml", unknown_kind)], images_dir=IMAGES)
    assert problem.field == "kind" and "no CustomResourceDefinition of it ships with kai-flows" in problem.message


def test_lint_holds_the_coordinator_pods_to_the_step_pods_hardening(compiled: Path, tmp_path: Path) -> None:
    docs = [d for p in sorted((compiled / "cluster").glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    pod = bad["spec"]["template"]["spec"]
    container = pod["containers"][0]
    del container["securityContext"]["readOnlyRootFilesystem"]
    del pod["securityContext"]["seccompProfile"]
    container["securityContext"]["allowPrivilegeEscalation"] = True
    del container["resources"]["limits"]
    container["image"] = "registry.example.com/kai/coordinator:latest"
    pod["volumes"][1]["emptyDir"] = {}
    pod["serviceAccountName"] = "kai-admin"
    bad["spec"]["template"]["metadata"]["labels"][STEP_LABEL] = "sneaky"
    others = [d for d in docs if d["kind"] != "Deployment"]
    problems = _messages(lint_paths([_write(tmp_path / "all.yaml", *others, bad)], images_dir=IMAGES))
    pp = "spec.template.spec"
    for expected in (
        f"{pp}.containers[0].securityContext.readOnlyRootFilesystem: container 'coordinator' may write to its root",
        f"{pp}.containers[0].securityContext.seccompProfile: container 'coordinator' has no seccomp profile",
        f"{pp}.containers[0].securityContext.allowPrivilegeEscalation: container 'coordinator' allows privilege",
        f"{pp}.containers[0].resources: container 'coordinator' is missing resources limits.cpu, limits.memory",
        f"{pp}.containers[0].image: image 'registry.example.com/kai/coordinator:latest' is tagged 'latest'",
        f"{pp}.volumes[1].emptyDir.sizeLimit: emptyDir volume 'tmp' has no sizeLimit",
        f"{pp}.serviceAccountName: ServiceAccount 'kai-admin' is not defined in the linted manifests",
        f"spec.template.metadata.labels.{STEP_LABEL}: the pods carry the step label",
    ):
        assert any(p.startswith(f"Deployment/kai-coordinator: {expected}") for p in problems), (expected, problems)
    unfenced = [d for d in others if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "kai-coordinator")]
    problems = _messages(lint_paths([_write(tmp_path / "unfenced.yaml", *unfenced, deployment)], images_dir=IMAGES))
    assert problems == ["Deployment/kai-coordinator: spec.template.metadata.labels: no NetworkPolicy of the linted "
                        "manifests selects the pods of Deployment/kai-coordinator with policyTypes Ingress and "
                        "Egress: they could reach, and be reached from, any address"]
