"""What Prometheus knows of the coordinator: the metrics it exports, the ServiceMonitor that scrapes them and the
PrometheusRule that alerts on them (Prometheus Operator kinds, checked by lint against their CRDs' schemas).

The gauges (`kai_queue_depth`, `kai_jobs_running`, `kai_jobs_in_flight`, `kai_admission_held`) are read from the
ledger by every replica, so they agree across replicas: expressions take their `max`. Counters and histograms
count what each replica did: expressions `sum` their rates.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from kai_flows.cluster.coordinator import MIN_AVAILABLE, NAME, NAME_LABEL

if TYPE_CHECKING:
    from kai_flows.cluster.coordinator import CoordinatorSettings

# name -> (type, labels): the contract with the coordinator process (kai_flows/ledger/metrics.py, the API's own).
COORDINATOR_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "kai_queue_depth": ("gauge", ("queue_class",)),
    "kai_jobs_running": ("gauge", ("queue_class",)),
    "kai_jobs_in_flight": ("gauge", ("queue_class",)),
    "kai_job_duration_seconds": ("histogram", ("queue_class", "status")),
    "kai_job_failures_total": ("counter", ("queue_class",)),
    "kai_jobs_finished_total": ("counter", ("queue_class", "status")),
    "kai_jobs_admitted_total": ("counter", ("queue_class",)),
    "kai_queue_wait_seconds": ("histogram", ("queue_class",)),
    "kai_admission_held": ("gauge", ("queue_class", "reason")),
    "kai_api_requests_total": ("counter", ("method", "route", "code")),
    "kai_api_request_duration_seconds": ("histogram", ("method", "route")),
}
HOLD_REASONS = ("unschedulable", "backend_refused")
# Series that come from the cluster rather than the coordinator, and what exports them.
CLUSTER_METRICS: dict[str, str] = {
    "up": "Prometheus (one per scraped target)",
    "kube_deployment_status_replicas": "kube-state-metrics",
    "kube_deployment_status_replicas_available": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_current_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_status_desired_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_spec_min_replicas": "kube-state-metrics",
    "kube_horizontalpodautoscaler_spec_max_replicas": "kube-state-metrics",
    "kube_pod_container_resource_requests": "kube-state-metrics",
    "container_cpu_usage_seconds_total": "cAdvisor (the kubelet)",
    "container_memory_working_set_bytes": "cAdvisor (the kubelet)",
}
FAILURE_RATIO = 0.2  # KaiJobFailureRateHigh: more than one job in five of a class failing over 30 minutes
SCRAPE_INTERVAL = "30s"


def exported_series() -> set[str]:
    """Every series name the coordinator exports (a histogram as its _bucket, _sum and _count)."""
    out: set[str] = set()
    for name, (kind, _) in COORDINATOR_METRICS.items():
        out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return out


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not its functions, labels, keywords or Grafana variables)."""
    text = _MATCHERS.sub(" ", _STRINGS.sub(" ", expr))
    text = _GROUPING.sub(" ", _RANGES.sub(" ", text))
    return {m.group(1) for m in _IDENTIFIER.finditer(text)
            if m.group(2) is None and m.group(1).lower() not in _KEYWORDS}


def service_monitor(s: CoordinatorSettings) -> dict[str, Any]:
    """Prometheus (the Operator's) scrapes `/metrics` on the Service's `metrics` port of every replica."""
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": s.meta(NAME),
        "spec": {
            "selector": {"matchLabels": {NAME_LABEL: NAME}},  # the Service's labels, in its own namespace
            "endpoints": [{"port": "metrics", "path": "/metrics", "scheme": "http", "interval": SCRAPE_INTERVAL,
                           "honorLabels": False}],
        },
    }


def _rule(alert: str, expr: str, for_: str, severity: str, summary: str, description: str,
          **labels: str) -> dict[str, Any]:
    return {"alert": alert, "expr": expr, "for": for_, "labels": {"severity": severity, **labels},
            "annotations": {"summary": summary, "description": description}}


def alert_rules(s: CoordinatorSettings) -> list[dict[str, Any]]:
    ns = f'namespace="{s.namespace}"'
    up = f'up{{job="{NAME}",{ns}}}'
    rules = [
        _rule("KaiQueueWaitOverTarget",
              f"histogram_quantile(0.9, sum by (le) (rate(kai_queue_wait_seconds_bucket{{{ns},queue_class=\"{c}\"}}"
              f"[15m]))) > {target:g}",
              "10m", "warning", f"Queue class {c}: jobs wait longer than {target:g} s for admission",
              f"The 90th percentile of the time from a job's creation to its admission in queue class {c} is "
              "{{ $value | humanizeDuration }}, over its target of " + f"{target:g} s (wait_target_seconds in "
              "ConfigMap kai-coordinator-config). Look at the class's concurrency, admission holds and the "
              "coordinator's replicas.", queue_class=c)
        for c, target in s.wait_targets.items()
    ]
    rules += [
        _rule("KaiJobFailureRateHigh",
              f"sum by (queue_class) (rate(kai_job_failures_total{{{ns}}}[30m])) / sum by (queue_class) "
              f"(rate(kai_jobs_finished_total{{{ns}}}[30m])) > {FAILURE_RATIO:g}",
              "15m", "warning", "Queue class {{ $labels.queue_class }}: many jobs fail",
              "{{ $value | humanizePercentage }} of the jobs of queue class {{ $labels.queue_class }} that finished "
              "in the last 30 minutes failed. `kai-flows` jobs list their failed steps; look at the workflows."),
        _rule("KaiCoordinatorDown",
              f"absent({up} == 1)",
              "5m", "critical", f"No coordinator replica is up in namespace {s.namespace}",
              "Prometheus scrapes no coordinator: no job is admitted, followed or cancelled, and the API does not "
              f"answer. kubectl -n {s.namespace} describe deployment {NAME}; kubectl -n {s.namespace} logs "
              f"deployment/{NAME}."),
        _rule("KaiCoordinatorDegraded",
              f"sum({up}) < {MIN_AVAILABLE}",
              "15m", "warning", f"Fewer than {MIN_AVAILABLE} coordinator replicas are up",
              "{{ $value }} coordinator replica(s) answer Prometheus; the PodDisruptionBudget asks for "
              f"{MIN_AVAILABLE}. One more failure stops admissions."),
        _rule("KaiAdmissionHeld",
              f"max by (queue_class, reason) (kai_admission_held{{{ns}}}) == 1",
              "15m", "warning", "Queue class {{ $labels.queue_class }}: admission held ({{ $labels.reason }})",
              "The coordinator has admitted nothing of queue class {{ $labels.queue_class }} for 15 minutes "
              "because of back-pressure: unschedulable (its workflows' pods cannot be scheduled: nodes of their "
              "pool, quota) or backend_refused (the Argo API refused or failed submissions)."),
        _rule("KaiCoordinatorAtMaxReplicas",
              f'kube_horizontalpodautoscaler_status_current_replicas{{{ns},horizontalpodautoscaler="{NAME}"}} >= '
              f'kube_horizontalpodautoscaler_spec_max_replicas{{{ns},horizontalpodautoscaler="{NAME}"}}',
              "30m", "warning", "The coordinator runs at its HPA maximum",
              "The HorizontalPodAutoscaler has held the coordinator at its maximum replicas for 30 minutes: CPU "
              "stays above target. Raise maxReplicas or find what loads it (API request rate, admissions)."),
    ]
    return rules


def prometheus_rule(s: CoordinatorSettings) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule", "metadata": s.meta(NAME),
        "spec": {"groups": [{"name": "kai-coordinator", "interval": SCRAPE_INTERVAL, "rules": alert_rules(s)}]},
    }


__all__ = ["CLUSTER_METRICS", "COORDINATOR_METRICS", "alert_rules", "exported_series", "metric_names",
           "prometheus_rule", "service_monitor"]
