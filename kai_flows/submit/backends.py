"""Two ways to reach Argo, chosen by configuration; both speak plain Workflow dicts.

- `RestBackend`: the Argo Server REST API, when `KAI_ARGO_SERVER` is set (token from `KAI_ARGO_TOKEN`, sent as
  `Authorization: Bearer <token>`). It uses Hera's `WorkflowsService` rather than the `argo-workflows` client:
  Hera is already a dependency (pinned, it compiles our templates), its service is generated from the same
  Argo swagger (create = `POST /api/v1/workflows/{ns}` with `{"workflow": ...}`, terminate/stop = `PUT
  .../{name}/terminate|stop`), its pydantic models round-trip our Workflow dicts unchanged, and the
  `argo-workflows` package would add a second, heavier generated client for the same four calls.
  It creates a full Workflow (`workflowTemplateRef` + spec) rather than calling `/submit`: the submit endpoint's
  `submitOptions` cannot carry `synchronization`, `podSpecPatch` or `parallelism`, which the queue and tier need.
- `KubeBackend`: the Kubernetes API (`kubernetes` client; kubeconfig, or in-cluster config inside a pod),
  creating `argoproj.io/v1alpha1` Workflow objects; cancel sets `spec.shutdown` as `argo stop|terminate` does.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Protocol

from kai_flows.submit.errors import SubmitError, WorkflowNotFound

GROUP, VERSION = "argoproj.io", "v1alpha1"
# Answers worth trying again later: rate limiting, and the server or a proxy in front of it failing or unavailable.
TRANSIENT = frozenset({429, 500, 502, 503, 504})


class Backend(Protocol):
    description: str

    def create(self, workflow: dict[str, Any]) -> dict[str, Any]: ...
    def get(self, name: str, namespace: str) -> dict[str, Any]: ...
    def list(self, namespace: str, label_selector: str) -> list[dict[str, Any]]: ...
    def stop(self, name: str, namespace: str) -> None: ...
    def terminate(self, name: str, namespace: str) -> None: ...
    def get_template(self, name: str, namespace: str) -> dict[str, Any] | None: ...


# ------------------------------------------------------------------------------------------ Argo Server REST


class RestBackend:
    def __init__(self, host: str, token: str | None = None, verify_ssl: bool = True) -> None:
        from hera.workflows.service import WorkflowsService

        if not host.startswith(("http://", "https://")):
            raise SubmitError(f"KAI_ARGO_SERVER {host!r} must start with http:// or https://")
        # urljoin drops the last path segment unless the base ends with "/" (servers behind a path prefix).
        self.host = host if host.endswith("/") else host + "/"
        self.description = f"Argo Server {self.host}"
        self.service = WorkflowsService(host=self.host, token=token or None, verify_ssl=verify_ssl)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import requests
        from hera.exceptions import HeraException, InternalServerError, NotFound

        try:
            with warnings.catch_warnings():  # Hera serialises with pydantic's deprecated .json()
                warnings.simplefilter("ignore", DeprecationWarning)
                return fn(*args, **kwargs)
        except NotFound:
            raise
        except HeraException as e:
            status = re.match(r"Server returned status code (\d+)", str(e))
            transient = isinstance(e, InternalServerError) or (status is not None and int(status[1]) in TRANSIENT)
            raise SubmitError(f"{self.description}: {what} failed: {e}", transient=transient) from None
        except requests.RequestException as e:
            raise SubmitError(f"cannot reach {self.description} ({what}): {type(e).__name__}", transient=True) from None

    @staticmethod
    def _dict(model: Any) -> dict[str, Any]:
        return model.model_dump(by_alias=True, exclude_none=True, mode="json")

    def create(self, workflow: dict[str, Any]) -> dict[str, Any]:
        from hera.workflows.models import Workflow, WorkflowCreateRequest

        ns = workflow["metadata"]["namespace"]
        req = WorkflowCreateRequest(namespace=ns, workflow=Workflow.model_validate(workflow))
        return self._dict(self._call("create workflow", self.service.create_workflow, req, namespace=ns))

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        from hera.exceptions import NotFound

        try:
            return self._dict(self._call(f"get workflow {name}", self.service.get_workflow, name, namespace=namespace))
        except NotFound:
            raise WorkflowNotFound(f"no workflow {name!r} in namespace {namespace!r} ({self.description})") from None

    def list(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = self._call("list workflows", self.service.list_workflows, namespace=namespace,
                            label_selector=label_selector)
        return [self._dict(w) for w in (result.items or [])]

    def stop(self, name: str, namespace: str) -> None:
        from hera.workflows.models import WorkflowStopRequest

        self._shutdown("stop", self.service.stop_workflow, WorkflowStopRequest, name, namespace)

    def terminate(self, name: str, namespace: str) -> None:
        from hera.workflows.models import WorkflowTerminateRequest

        self._shutdown("terminate", self.service.terminate_workflow, WorkflowTerminateRequest, name, namespace)

    def _shutdown(self, verb: str, fn: Any, request_type: Any, name: str, namespace: str) -> None:
        from hera.exceptions import NotFound

        try:
            self._call(f"{verb} workflow {name}", fn, name, request_type(name=name, namespace=namespace),
                       namespace=namespace)
        except NotFound:
            raise WorkflowNotFound(f"no workflow {name!r} in namespace {namespace!r} ({self.description})") from None

    def get_template(self, name: str, namespace: str) -> dict[str, Any] | None:
        from hera.exceptions import NotFound

        try:
            model = self._call(f"get template {name}", self.service.get_workflow_template, name, namespace=namespace)
        except NotFound:
            return None
        doc = self._dict(model)
        doc.setdefault("kind", "WorkflowTemplate")  # the server omits TypeMeta on reads
        return doc


# ------------------------------------------------------------------------------------------ Kubernetes API


class KubeBackend:
    def __init__(self, api_client: Any, description: str = "Kubernetes API") -> None:
        from kubernetes import client

        self.api = client.CustomObjectsApi(api_client)
        self.description = description

    def _call(self, what: str, fn: Any, *args: Any, not_found: str | None = None, **kwargs: Any) -> Any:
        """Call the API; a 404 raises WorkflowNotFound(`not_found`) when given (or returns None when it is ""),
        others SubmitError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as e:
            if e.status == 404 and not_found is not None:
                if not_found:
                    raise WorkflowNotFound(not_found) from None
                return None
            raise SubmitError(f"{self.description}: {what} failed: HTTP {e.status}: {_api_detail(e)}",
                              transient=e.status in TRANSIENT) from None
        except HTTPError as e:
            raise SubmitError(f"cannot reach {self.description} ({what}): {type(e).__name__}", transient=True) from None

    def _missing(self, name: str, namespace: str) -> str:
        return f"no workflow {name!r} in namespace {namespace!r} ({self.description})"

    def create(self, workflow: dict[str, Any]) -> dict[str, Any]:
        ns = workflow["metadata"]["namespace"]
        return self._call("create workflow", self.api.create_namespaced_custom_object, GROUP, VERSION, ns,
                          "workflows", workflow)

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        return self._call(f"get workflow {name}", self.api.get_namespaced_custom_object, GROUP, VERSION, namespace,
                          "workflows", name, not_found=self._missing(name, namespace))

    def list(self, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        result = self._call("list workflows", self.api.list_namespaced_custom_object, GROUP, VERSION, namespace,
                            "workflows", label_selector=label_selector)
        return list(result.get("items") or [])

    def _shutdown(self, mode: str, name: str, namespace: str) -> None:
        self._call(f"{mode.lower()} workflow {name}", self.api.patch_namespaced_custom_object, GROUP, VERSION,
                   namespace, "workflows", name, {"spec": {"shutdown": mode}}, not_found=self._missing(name, namespace))

    def stop(self, name: str, namespace: str) -> None:
        self._shutdown("Stop", name, namespace)

    def terminate(self, name: str, namespace: str) -> None:
        self._shutdown("Terminate", name, namespace)

    def get_template(self, name: str, namespace: str) -> dict[str, Any] | None:
        return self._call(f"get template {name}", self.api.get_namespaced_custom_object, GROUP, VERSION, namespace,
                          "workflowtemplates", name, not_found="")


def _api_detail(e: Any) -> str:
    import json

    try:
        return json.loads(e.body or "{}").get("message") or e.reason
    except (ValueError, AttributeError):
        return str(e.reason)


# ------------------------------------------------------------------------------------------ configuration


def kube_api_client(context: str | None = None, config_file: str | None = None) -> tuple[Any, str]:
    """An ApiClient from in-cluster config (inside a pod) or the kubeconfig (`config_file`, else $KUBECONFIG,
    else ~/.kube/config); SubmitError when neither exists."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    if context is None and config_file is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config()
            from kubernetes import client

            return client.ApiClient(), "Kubernetes API (in-cluster)"
        except ConfigException:
            pass
    kubeconfig = config_file or os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")).split(os.pathsep)[0]
    if not Path(kubeconfig).is_file():
        raise SubmitError("no cluster configured: set KAI_ARGO_SERVER (and KAI_ARGO_TOKEN) for the Argo Server, "
                          f"or provide a kubeconfig (none at {kubeconfig})")
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig, context=context)
    except ConfigException as e:
        raise SubmitError(f"kubeconfig {kubeconfig}: {e}") from None
    return api_client, f"Kubernetes API ({kubeconfig}{', context ' + context if context else ''})"


def cluster_configured() -> bool:
    """Whether an Argo Server or a kubeconfig / in-cluster config is configured (live tests use this)."""
    if os.environ.get("KAI_ARGO_SERVER") or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    return Path(os.environ.get("KUBECONFIG", str(Path.home() / ".kube" / "config")).split(os.pathsep)[0]).is_file()


def backend_from_env(context: str | None = None) -> Backend:
    """REST when `KAI_ARGO_SERVER` is set (token `KAI_ARGO_TOKEN`; `KAI_ARGO_INSECURE=1` skips TLS checks),
    else the Kubernetes API (in-cluster config, else the kubeconfig and `context`)."""
    if server := os.environ.get("KAI_ARGO_SERVER"):
        insecure = os.environ.get("KAI_ARGO_INSECURE", "").lower() in ("1", "true", "yes")
        return RestBackend(server, os.environ.get("KAI_ARGO_TOKEN"), verify_ssl=not insecure)
    api_client, description = kube_api_client(context)
    return KubeBackend(api_client, description)
