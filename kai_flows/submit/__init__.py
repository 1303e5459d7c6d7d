"""Submission to a cluster: build a Workflow from a WorkflowTemplate with Kai's queue and tier policy, create it
through the Argo Server REST API or the Kubernetes API, follow it, find it by job id, cancel it, fetch its outputs."""

from kai_flows.submit.backends import Backend, KubeBackend, RestBackend, backend_from_env, cluster_configured
from kai_flows.submit.client import Submitter
from kai_flows.submit.download import download_artifacts, s3_config_from_env
from kai_flows.submit.errors import SubmitError, WaitTimeout
from kai_flows.submit.request import JOB_ID_LABEL, SubmitRequest, build_workflow
from kai_flows.submit.status import ArtifactLocation, NodeStatus, WorkflowStatus, parse_status
from kai_flows.submit.template import TemplateInfo, load_local_template, parse_template

__all__ = [
    "JOB_ID_LABEL",
    "ArtifactLocation",
    "Backend",
    "KubeBackend",
    "NodeStatus",
    "RestBackend",
    "SubmitError",
    "SubmitRequest",
    "Submitter",
    "TemplateInfo",
    "WaitTimeout",
    "WorkflowStatus",
    "backend_from_env",
    "build_workflow",
    "cluster_configured",
    "download_artifacts",
    "load_local_template",
    "parse_status",
    "parse_template",
    "s3_config_from_env",
]
