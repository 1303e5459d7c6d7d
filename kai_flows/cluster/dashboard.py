"""The coordinator's Grafana dashboard: one Python definition (ROWS below), rendered to Grafana's JSON model and
shipped as a ConfigMap labelled `grafana_dashboard: "1"` (what Grafana's dashboard sidecar, e.g. in
kube-prometheus-stack, loads).

Panels: queue depth by class, jobs in flight and running, admissions per second, queue wait p90, admission held
(back-pressure), jobs finished and failure ratio, job duration; replica count, the HPA's desired replicas and its
scaling events, CPU (against the HPA's 80% target) and memory per replica; API request rate and latency. Every
expression reads a metric of kai_flows.cluster.monitoring (the coordinator's, or the cluster's listed there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kai_flows.cluster.coordinator import CONTAINER, CPU_TARGET_PERCENT, NAME

if TYPE_CHECKING:
    from kai_flows.cluster.coordinator import CoordinatorSettings

CONFIGMAP = "kai-coordinator-dashboard"
FILE_NAME = "kai-coordinator.json"
UID = "kai-coordinator"
SIDECAR_LABEL = {"grafana_dashboard": "1"}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
NS = 'namespace="$namespace"'
POD = f'{NS},pod=~"{NAME}-.*",container="{CONTAINER}"'  # the Deployment's pods (the Job's container is `migrate`)
HPA = f'{NS},horizontalpodautoscaler="{NAME}"'
DEPLOYMENT = f'{NS},deployment="{NAME}"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"  # or "state-timeline"
    bars: bool = False
    threshold: float | None = None  # a red line (e.g. the HPA's CPU target)
    mappings: dict[str, str] = field(default_factory=dict)  # value -> text (state-timeline)


def _quantile(q: float, metric: str, by: str, window: str = "5m") -> str:
    return f"histogram_quantile({q:g}, sum by (le, {by}) (rate({metric}_bucket{{{NS}}}[{window}])))"


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    ("Queues", (
        Panel("Queue depth by class", (Query(f"max by (queue_class) (kai_queue_depth{{{NS}}})", "{{queue_class}}"),),
              description="Jobs waiting for admission, per queue class (from the ledger)."),
        Panel("Jobs in flight and running", (
            Query(f"max by (queue_class) (kai_jobs_in_flight{{{NS}}})", "{{queue_class}} in flight"),
            Query(f"max by (queue_class) (kai_jobs_running{{{NS}}})", "{{queue_class}} running")),
            description="In flight: submitted or running, what each class's concurrency caps."),
        Panel("Admissions per second by class", (
            Query(f"sum by (queue_class) (rate(kai_jobs_admitted_total{{{NS}}}[$__rate_interval]))",
                  "{{queue_class}}"),), unit="ops",
            description="Jobs admitted (claimed and submitted) per second; under backlog, in the ratio of the "
                        "classes' weights."),
        Panel("Queue wait p90 by class", (
            Query(_quantile(0.9, "kai_queue_wait_seconds", "queue_class", "10m"), "{{queue_class}}"),), unit="s",
            description="90th percentile of the time from a job's creation to its admission; each class's target "
                        "is wait_target_seconds in ConfigMap kai-coordinator-config (alert KaiQueueWaitOverTarget)."),
        Panel("Admission held (back-pressure)", (
            Query(f"max by (queue_class, reason) (kai_admission_held{{{NS}}})", "{{queue_class}}: {{reason}}"),),
            kind="state-timeline", mappings={"0": "admitting", "1": "held"},
            description="A class is held while its workflows' pods cannot be scheduled, or after the backend "
                        "refused a submission."),
        Panel("Jobs finished per second by status", (
            Query(f"sum by (queue_class, status) (rate(kai_jobs_finished_total{{{NS}}}[$__rate_interval]))",
                  "{{queue_class}} {{status}}"),), unit="ops"),
        Panel("Failure ratio by class (30 min)", (
            Query(f"sum by (queue_class) (rate(kai_job_failures_total{{{NS}}}[30m])) / sum by (queue_class) "
                  f"(rate(kai_jobs_finished_total{{{NS}}}[30m]))", "{{queue_class}}"),), unit="percentunit"),
        Panel("Job duration p90 by class", (
            Query(_quantile(0.9, "kai_job_duration_seconds", "queue_class", "30m"), "{{queue_class}}"),), unit="s"),
    )),
    ("Replicas and scaling", (
        Panel("Coordinator replicas", (
            Query(f"kube_deployment_status_replicas{{{DEPLOYMENT}}}", "replicas"),
            Query(f"kube_deployment_status_replicas_available{{{DEPLOYMENT}}}", "available"),
            Query(f'count(up{{job="{NAME}",{NS}}} == 1)', "scraped and up")),
            description="The Deployment's replicas (kube-state-metrics) and those Prometheus scrapes."),
        Panel("Autoscaler: desired and current replicas", (
            Query(f"kube_horizontalpodautoscaler_status_desired_replicas{{{HPA}}}", "desired"),
            Query(f"kube_horizontalpodautoscaler_status_current_replicas{{{HPA}}}", "current"),
            Query(f"kube_horizontalpodautoscaler_spec_min_replicas{{{HPA}}}", "min"),
            Query(f"kube_horizontalpodautoscaler_spec_max_replicas{{{HPA}}}", "max"))),
        Panel("Scaling events", (
            Query(f"changes(kube_horizontalpodautoscaler_status_desired_replicas{{{HPA}}}[5m])",
                  "desired-replica changes in 5 min"),), bars=True,
            description="Each bar: the HPA changed its desired replica count in the preceding 5 minutes."),
        Panel("CPU utilisation per replica (of its request)", (
            Query(f"sum by (pod) (rate(container_cpu_usage_seconds_total{{{POD}}}[$__rate_interval])) / sum by "
                  f'(pod) (kube_pod_container_resource_requests{{{POD},resource="cpu"}})', "{{pod}}"),),
            unit="percentunit", threshold=CPU_TARGET_PERCENT / 100,
            description=f"The HPA adds replicas while the average stays above {CPU_TARGET_PERCENT}% (the red line)."),
        Panel("Memory working set per replica", (
            Query(f"sum by (pod) (container_memory_working_set_bytes{{{POD}}})", "{{pod}}"),), unit="bytes"),
    )),
    ("API", (
        Panel("API requests per second by status code", (
            Query(f"sum by (code) (rate(kai_api_requests_total{{{NS}}}[$__rate_interval]))", "{{code}}"),),
            unit="reqps"),
        Panel("API latency p50 and p99 by route", (
            Query(_quantile(0.5, "kai_api_request_duration_seconds", "route"), "{{route}} p50"),
            Query(_quantile(0.99, "kai_api_request_duration_seconds", "route"), "{{route}} p99")), unit="s"),
    )),
)


def _panel(p: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    custom: dict[str, Any] = {"fillOpacity": 10, "lineWidth": 1}
    defaults: dict[str, Any] = {"unit": p.unit, "custom": custom}
    if p.bars:
        custom.update(drawStyle="bars", fillOpacity=80)
    if p.threshold is not None:
        custom["thresholdsStyle"] = {"mode": "line"}
        defaults["thresholds"] = {"mode": "absolute", "steps": [{"color": "green", "value": None},
                                                                {"color": "red", "value": p.threshold}]}
    if p.mappings:
        defaults["mappings"] = [{"type": "value", "options": {
            k: {"text": v, "index": i, "color": "green" if i == 0 else "red"}
            for i, (k, v) in enumerate(p.mappings.items())}}]
        defaults["custom"] = {"fillOpacity": 70, "lineWidth": 0}
    panel = {
        "id": panel_id, "type": p.kind, "title": p.title, "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend,
                     "range": True} for i, q in enumerate(p.queries)],
    }
    if p.description:
        panel["description"] = p.description
    return panel


def dashboard(s: CoordinatorSettings) -> dict[str, Any]:
    """The Grafana dashboard model (schemaVersion 39): rows of panels, two per line."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, row in ROWS:
        panels.append({"id": len(panels) + 1, "type": "row", "title": title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        y += 1
        for i, p in enumerate(row):
            panels.append(_panel(p, len(panels) + 1, 12 * (i % 2), y + 8 * (i // 2)))
        y += 8 * ((len(row) + 1) // 2)
    namespace_query = "label_values(kai_queue_depth, namespace)"
    return {
        "uid": UID, "title": "kai-flows coordinator", "tags": ["kai-flows", "coordinator"],
        "description": "Queues, admissions and back-pressure, replicas and autoscaling, and the API of the "
                       "kai-flows coordinator (generated by kai-flows compile; edit kai_flows/cluster/dashboard.py).",
        "editable": True, "graphTooltip": 1, "refresh": "30s", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-6h", "to": "now"}, "timezone": "",
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            {"name": "namespace", "label": "Namespace", "type": "query", "datasource": DATASOURCE,
             "definition": namespace_query, "query": {"query": namespace_query, "refId": "namespace"},
             "current": {"text": s.namespace, "value": s.namespace}, "hide": 0, "refresh": 2, "sort": 1},
        ]},
        "panels": panels,
    }


def dashboard_config_map(s: CoordinatorSettings) -> dict[str, Any]:
    meta = s.meta(CONFIGMAP)
    meta["labels"] = {**meta["labels"], **SIDECAR_LABEL}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {FILE_NAME: json.dumps(dashboard(s), indent=2, sort_keys=True) + "\n"}}
