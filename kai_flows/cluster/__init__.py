"""The coordinator as a cluster service: the manifests `kai-flows compile` renders beside the infrastructure's
(`workflow_templates/cluster/1N-coordinator-*.yaml`) and `kai-flows deploy` applies.

- `coordinator`: its ConfigMap, migration Job, Deployment, Service, HPA, PDB and NetworkPolicies;
- `quota`: the namespace's ResourceQuota and LimitRange;
- `monitoring`: the metrics the coordinator exports, its ServiceMonitor and PrometheusRule (alerts);
- `dashboard`: the Grafana dashboard, generated from one Python definition, as a ConfigMap.

kai_flows.compile.cluster_manifests assembles them; nothing here talks to a cluster.
"""
