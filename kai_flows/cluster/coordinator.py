"""The coordinator's own objects: ConfigMap, migration Job, Deployment, Service, HPA, PDB and NetworkPolicies.

The contract with the process (`kai-flows coordinator`, kai_flows/cli/ledger.py and kai_flows/service/):
- image `<registry>/kai/coordinator:<tag>` (images/coordinator/Dockerfile), pinned by digest like the step images;
- `kai-flows coordinator --backend argo --config /etc/kai/coordinator/coordinator.yaml --api-port 8080
  --metrics-port 8081`; the config is the ConfigMap `kai-coordinator-config` (`CoordinatorConfig.from_policy`),
  and a checksum of it on the pod template rolls the Deployment when it changes;
- env: KAI_DATABASE_URL (Secret kai-ledger-database, key url), KAI_API_TOKEN (Secret kai-coordinator-api, key
  token), KAI_CLAIMER (the pod's name), and the KAI_S3_* settings the Argo backend reads the outputs with (the
  artifact repository's endpoint and bucket, the keys from Secret kai-s3-credentials);
- port 8080 `api` (GET /healthz: alive; GET /readyz: database reachable and migrations current), port 8081
  `metrics` (GET /metrics);
- `kai-flows migrate` runs first, as a Job named by a hash of the migration files and its spec, image included
  (a Job's pod template is immutable: a new migration set or image is a new Job; the same ones are the same,
  already complete, Job).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kai_flows.compile import (
    COORDINATOR_SERVICE_ACCOUNT,
    RUN_AS_USER,
    S3_CREDENTIALS_SECRET,
    ClusterSettings,
    dns_egress,
    kube_api_egress,
    s3_egress,
)
from kai_flows.policy import Policy

NAME = COORDINATOR_SERVICE_ACCOUNT  # "kai-coordinator": ServiceAccount, Deployment, Service, HPA, PDB, policy
CONFIGMAP = "kai-coordinator-config"
CONFIG_DIR = "/etc/kai/coordinator"
MIGRATE = "kai-coordinator-migrate"  # the Job's name prefix and its pods' app.kubernetes.io/name
CONTAINER = "coordinator"
API_PORT, METRICS_PORT = 8080, 8081
NAME_LABEL = "app.kubernetes.io/name"
COMPONENT_LABEL = "app.kubernetes.io/component"
COMPONENT = "coordinator"  # every object of the coordinator carries it; `deploy --skip-coordinator` selects by it
COMPONENT_LABELS = {COMPONENT_LABEL: COMPONENT}
PART_OF = {"app.kubernetes.io/part-of": "kai-flows"}
CHECKSUM_ANNOTATION = "kai-flows.io/config-checksum"
DATABASE_SECRET, DATABASE_KEY = "kai-ledger-database", "url"
API_TOKEN_SECRET, API_TOKEN_KEY = "kai-coordinator-api", "token"
POOL = "orchestration"  # the control-plane pool of the deployment guide
PRIORITY_CLASS = "system-critical"  # never preempted by the work it admits
REPLICAS, MAX_REPLICAS, CPU_TARGET_PERCENT, MIN_AVAILABLE = 3, 10, 80, 2  # the guide's HA and HPA settings
# The coordinator waits on PostgreSQL and the API server far more than it computes: a quarter core is its steady
# state, so the HPA's 80% of the request (200m sustained) means a real backlog of admissions or API calls; the
# limit lets one replica burst to a core meanwhile. Memory: Python with the kubernetes client, Hera and the API
# stack sits near 200 MiB; the limit leaves room for a large job listing without letting a leak grow unnoticed.
RESOURCES = {"requests": {"cpu": "250m", "memory": "384Mi"}, "limits": {"cpu": "1", "memory": "768Mi"}}
MIGRATION_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}
TMP_SIZE_LIMIT = "256Mi"  # /tmp, the only writable path (the root filesystem is read-only)
# The migration Job: `migrate` takes an advisory lock (waits up to 300 s for another runner) and applies a few
# files; ten minutes covers both. Its pods are kept a day for `kubectl logs`; a Job deleted by then is created
# again by the next deploy under the same name, and `migrate` finds nothing to apply.
MIGRATION_DEADLINE_SECONDS = 600
MIGRATION_BACKOFF_LIMIT = 2
MIGRATION_TTL_SECONDS = 86400


def config_checksum(data: Mapping[str, str]) -> str:
    """sha256 of a ConfigMap's data: on the pod template, a changed config rolls the Deployment."""
    return hashlib.sha256(json.dumps(dict(data), sort_keys=True).encode()).hexdigest()


def migration_job_name(spec: Mapping[str, Any], migrations: list[tuple[str, str]] | None = None) -> str:
    """`kai-coordinator-migrate-<hash>` of the migration files (name, sha256) and the Job's spec (its image, command,
    resources...): a Job's pod template is immutable, so any change is a new Job, and the same ones the same Job."""
    if migrations is None:
        from kai_flows.ledger.migrate import discover

        migrations = [(f.name, f.checksum) for f in discover()]
    digest = hashlib.sha256(json.dumps({"spec": spec, "migrations": migrations}, sort_keys=True).encode())
    return f"{MIGRATE}-{digest.hexdigest()[:10]}"


@dataclass(frozen=True)
class CoordinatorSettings:
    """Everything the coordinator's manifests depend on, resolved once."""

    namespace: str
    image: str
    policy: Policy
    cluster: ClusterSettings
    config: Any  # kai_flows.service.config.CoordinatorConfig
    labels: dict[str, str] = field(default_factory=lambda: {**PART_OF, **COMPONENT_LABELS})

    @classmethod
    def of(cls, policy: Policy, cluster: ClusterSettings, image: str) -> CoordinatorSettings:
        from kai_flows.service.config import CoordinatorConfig

        return cls(policy.namespace, image, policy, cluster, CoordinatorConfig.from_policy(policy))

    # ------------------------------------------------------------------------------------------- helpers

    @property
    def wait_targets(self) -> dict[str, float]:
        """Queue class -> how long its jobs may wait for admission (the QueueWaitOverTarget alert's threshold)."""
        return {name: q.wait_target_seconds for name, q in sorted(self.config.queues.items())}

    def meta(self, name: str, app: str = NAME, **extra: Any) -> dict[str, Any]:
        return {"name": name, "namespace": self.namespace, "labels": {**self.labels, NAME_LABEL: app}, **extra}

    @property
    def selector(self) -> dict[str, str]:
        """The Deployment's pods (the migration Job's pods are `kai-coordinator-migrate`: not selected)."""
        return {NAME_LABEL: NAME, COMPONENT_LABEL: COMPONENT}

    def _config_data(self) -> dict[str, str]:
        from kai_flows.service.config import CONFIG_FILE_NAME

        return {CONFIG_FILE_NAME: self.config.to_yaml()}

    def _pod(self, container: dict[str, Any], **extra: Any) -> dict[str, Any]:
        pool = self.policy.pool(POOL)
        self.policy.priority_class(PRIORITY_CLASS)  # both must exist in the policy
        return {
            "priorityClassName": PRIORITY_CLASS,
            "nodeSelector": pool.node_selector,
            "tolerations": pool.tolerations(),
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            **extra,
        }

    def _container(self, name: str, args: list[str], env: list[dict[str, Any]], resources: dict[str, Any],
                   mounts: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "name": name, "image": self.image, "imagePullPolicy": "IfNotPresent",
            "command": ["kai-flows"], "args": args, "env": env, "resources": resources,
            "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [*mounts, {"name": "tmp", "mountPath": "/tmp"}],
            **extra,
        }

    @staticmethod
    def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}

    def _database_egress(self) -> dict[str, Any]:
        return {"to": [{"ipBlock": {"cidr": c}} for c in self.cluster.database_cidrs],
                "ports": [{"protocol": "TCP", "port": self.cluster.database_port}]}

    # ------------------------------------------------------------------------------------------- objects

    def config_map(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.meta(CONFIGMAP), "data": self._config_data()}

    def migration_job(self) -> dict[str, Any]:
        """`kai-flows migrate` with the coordinator's image and database Secret; `deploy` waits for it to complete
        before it applies the Deployment."""
        container = self._container(
            "migrate", ["migrate"], [self._secret_env("KAI_DATABASE_URL", DATABASE_SECRET, DATABASE_KEY)],
            MIGRATION_RESOURCES, [])
        labels = {**self.labels, NAME_LABEL: MIGRATE}
        spec = {
            "backoffLimit": MIGRATION_BACKOFF_LIMIT,
            "activeDeadlineSeconds": MIGRATION_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": MIGRATION_TTL_SECONDS,
            "template": {"metadata": {"labels": labels}, "spec": self._pod(
                container, restartPolicy="Never",
                automountServiceAccountToken=False,  # it talks to PostgreSQL only
                volumes=[{"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}])},
        }
        return {
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": self.meta(migration_job_name(spec), MIGRATE, annotations={
                "kai-flows.io/purpose": "ledger migrations; kai-flows deploy waits for it before the coordinator"}),
            "spec": spec,
        }

    def _env(self) -> list[dict[str, Any]]:
        scheme = "http://" if self.cluster.insecure_artifact_repository else "https://"
        return [
            self._secret_env("KAI_DATABASE_URL", DATABASE_SECRET, DATABASE_KEY),
            self._secret_env("KAI_API_TOKEN", API_TOKEN_SECRET, API_TOKEN_KEY),
            {"name": "KAI_CLAIMER", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "KAI_S3_ENDPOINT", "value": scheme + self.cluster.s3_endpoint},
            {"name": "KAI_S3_BUCKET", "value": self.cluster.s3_bucket},
            self._secret_env("KAI_S3_ACCESS_KEY", S3_CREDENTIALS_SECRET, "accessKey"),
            self._secret_env("KAI_S3_SECRET_KEY", S3_CREDENTIALS_SECRET, "secretKey"),
        ]

    def deployment(self) -> dict[str, Any]:
        from kai_flows.service.config import CONFIG_FILE_NAME

        def probe(path: str, period: int, failures: int) -> dict[str, Any]:
            return {"httpGet": {"path": path, "port": "api"}, "periodSeconds": period, "timeoutSeconds": 3,
                    "failureThreshold": failures}

        container = self._container(
            CONTAINER,
            ["coordinator", "--backend", "argo", "--config", f"{CONFIG_DIR}/{CONFIG_FILE_NAME}",
             "--api-port", str(API_PORT), "--metrics-port", str(METRICS_PORT)],
            self._env(), RESOURCES, [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
            ports=[{"name": "api", "containerPort": API_PORT, "protocol": "TCP"},
                   {"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
            # Up to 5 minutes to reach the database with the migrations current; then ready while /readyz answers,
            # restarted when /healthz stops answering for 30 s.
            startupProbe=probe("/readyz", 5, 60),
            readinessProbe=probe("/readyz", 5, 3),
            livenessProbe=probe("/healthz", 10, 3),
        )
        spread = [
            # Replicas on different nodes (a node lost takes one replica), and zones where the cluster has them.
            # matchLabelKeys: each rollout's new pods spread among themselves, not against the old ones leaving.
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
             "labelSelector": {"matchLabels": self.selector}, "matchLabelKeys": ["pod-template-hash"]},
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": self.selector}, "matchLabelKeys": ["pod-template-hash"]},
        ]
        pod = self._pod(container, serviceAccountName=NAME, topologySpreadConstraints=spread,
                        terminationGracePeriodSeconds=30,
                        volumes=[{"name": "config", "configMap": {"name": CONFIGMAP}},
                                 {"name": "tmp", "emptyDir": {"sizeLimit": TMP_SIZE_LIMIT}}])
        return {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": self.meta(NAME),
            "spec": {
                # The HPA owns the count from here on; `kai-flows deploy` re-applies the live count, never this one.
                "replicas": REPLICAS,
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": self.selector},
                # Never fewer ready replicas than asked for during a rollout: one new pod at a time, ready first.
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {**self.labels, **self.selector},
                                 "annotations": {CHECKSUM_ANNOTATION: config_checksum(self._config_data())}},
                    "spec": pod,
                },
            },
        }

    def service(self) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": self.meta(NAME), "spec": {
            "type": "ClusterIP", "selector": self.selector,
            "ports": [{"name": "api", "port": API_PORT, "targetPort": "api", "protocol": "TCP", "appProtocol": "http"},
                      {"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP",
                       "appProtocol": "http"}]}}

    def autoscaler(self) -> dict[str, Any]:
        kind = "HorizontalPodAutoscaler"
        return {"apiVersion": "autoscaling/v2", "kind": kind, "metadata": self.meta(NAME), "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "minReplicas": REPLICAS, "maxReplicas": MAX_REPLICAS,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT}}}],
            # Up quickly (two pods a minute) when a backlog arrives; down slowly (one pod every two minutes, after
            # five minutes below target) so a bursty submitter does not make the replica count saw.
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0,
                            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
                "scaleDown": {"stabilizationWindowSeconds": 300,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]},
            }}}

    def disruption_budget(self) -> dict[str, Any]:
        return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": self.meta(NAME), "spec": {
            "minAvailable": MIN_AVAILABLE, "selector": {"matchLabels": self.selector},
            # A replica that is not ready anyway (crash-looping) may be evicted: it must not block a node drain.
            "unhealthyPodEvictionPolicy": "AlwaysAllow"}}

    def network_policy(self) -> dict[str, Any]:
        """The coordinator's pods: ingress on the API and metrics ports only (from any namespace: the platform's
        API server and Prometheus live in namespaces kai-flows cannot name; the API answers nobody without the
        bearer token, and the metrics carry no job data); egress to DNS, PostgreSQL, the Kubernetes API (Argo
        workflows, pods) and the artifact repository (the outputs' sizes and checksums), nothing else."""
        return {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": self.meta(NAME),
            "spec": {
                "podSelector": {"matchLabels": self.selector},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"namespaceSelector": {}}],
                             "ports": [{"protocol": "TCP", "port": API_PORT},
                                       {"protocol": "TCP", "port": METRICS_PORT}]}],
                "egress": [dns_egress(), self._database_egress(), kube_api_egress(self.cluster),
                           s3_egress(self.cluster)],
            },
        }

    def migration_network_policy(self) -> dict[str, Any]:
        """The migration Job's pods: no ingress; egress to DNS and PostgreSQL only."""
        return {
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": self.meta(MIGRATE, MIGRATE),
            "spec": {"podSelector": {"matchLabels": {NAME_LABEL: MIGRATE, COMPONENT_LABEL: COMPONENT}},
                     "policyTypes": ["Ingress", "Egress"], "egress": [dns_egress(), self._database_egress()]},
        }


# ---------------------------------------------------------------------------------------------- deploy-time


def retarget(doc: dict[str, Any], old: str, new: str) -> None:
    """Move the namespace named inside the coordinator's objects (not their metadata, which deploy moves): the
    config's `namespace` (where the coordinator creates workflows) and the alert expressions' `namespace=` matchers.
    Changes `doc` in place; call restamp() afterwards, as the config changed."""
    import yaml

    from kai_flows.service.config import CONFIG_FILE_NAME

    if old == new:
        return
    labels = (doc.get("metadata") or {}).get("labels") or {}
    if labels.get(COMPONENT_LABEL) != COMPONENT:
        return
    if doc.get("kind") == "ConfigMap" and doc["metadata"].get("name") == CONFIGMAP:
        data = doc.get("data") or {}
        if CONFIG_FILE_NAME in data:
            config = yaml.safe_load(data[CONFIG_FILE_NAME]) or {}
            if config.get("namespace") == old:
                config["namespace"] = new
                data[CONFIG_FILE_NAME] = yaml.safe_dump(config, sort_keys=False)
    if doc.get("kind") == "PrometheusRule":
        for group in (doc.get("spec") or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                if isinstance(rule.get("expr"), str):
                    rule["expr"] = rule["expr"].replace(f'namespace="{old}"', f'namespace="{new}"')


def restamp(docs: list[dict[str, Any]]) -> None:
    """Set the Deployment's config checksum from the config ConfigMap among `docs` (after retarget changed it)."""
    configs = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"].get("name") == CONFIGMAP]
    for d in docs:
        if d.get("kind") == "Deployment" and d["metadata"].get("name") == NAME and configs:
            annotations = d["spec"]["template"]["metadata"].setdefault("annotations", {})
            annotations[CHECKSUM_ANNOTATION] = config_checksum(configs[0].get("data") or {})
