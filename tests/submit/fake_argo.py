"""A small local HTTP server speaking the few Argo Server and Kubernetes API endpoints kai-flows calls.

What it is: a stand-in for the servers' HTTP surface only, so the real clients (Hera's WorkflowsService,
the `kubernetes` client) do a real HTTP round trip: URLs, methods, query strings, headers (Bearer token,
content types) and JSON bodies as they are really sent, and responses parsed as they would be.
What it does NOT verify: anything the Argo controller or API server does with a Workflow (defaulting, merging
the WorkflowTemplate, admission, RBAC, semaphores, scheduling, server-side-apply field merging); the test
scripts the workflow status it returns. Request bodies are checked separately against Argo's swagger and schema.
"""

from __future__ import annotations

import json
import random
import string
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

ARGO = "/api/v1/workflows/"
ARGO_TEMPLATES = "/api/v1/workflow-templates/"
KUBE = "/apis/argoproj.io/v1alpha1/namespaces/"

# Minimal discovery documents for the dynamic client (server-side apply of the deploy manifests).
_KINDS = {
    ("", "v1"): [("namespaces", "Namespace", False), ("configmaps", "ConfigMap", True),
                 ("serviceaccounts", "ServiceAccount", True), ("secrets", "Secret", True),
                 ("services", "Service", True), ("pods", "Pod", True), ("resourcequotas", "ResourceQuota", True),
                 ("limitranges", "LimitRange", True)],
    ("apps", "v1"): [("deployments", "Deployment", True)],
    ("batch", "v1"): [("jobs", "Job", True)],
    ("autoscaling", "v2"): [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)],
    ("policy", "v1"): [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    ("monitoring.coreos.com", "v1"): [("servicemonitors", "ServiceMonitor", True),
                                      ("prometheusrules", "PrometheusRule", True)],
    ("scheduling.k8s.io", "v1"): [("priorityclasses", "PriorityClass", False)],
    ("networking.k8s.io", "v1"): [("networkpolicies", "NetworkPolicy", True)],
    ("rbac.authorization.k8s.io", "v1"): [("roles", "Role", True), ("rolebindings", "RoleBinding", True),
                                          ("clusterroles", "ClusterRole", False),
                                          ("clusterrolebindings", "ClusterRoleBinding", False)],
    ("argoproj.io", "v1alpha1"): [("workflows", "Workflow", True), ("workflowtemplates", "WorkflowTemplate", True)],
}


COMPLETE = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}


class FakeArgo:
    def __init__(self, token: str = "s3cret", argo_crds: bool = True, monitoring_crds: bool = True) -> None:
        self.token = token
        self.kinds = {gv: r for gv, r in _KINDS.items() if (argo_crds or gv[0] != "argoproj.io")
                      and (monitoring_crds or gv[0] != "monitoring.coreos.com")}
        # Objects the cluster holds, by API path: what was applied (a later apply replaces it), or put by a test.
        self.live: dict[str, dict[str, Any]] = {}
        self.job_statuses: list[dict[str, Any]] = []  # statuses successive GETs of a Job answer (the last repeats)
        self.pods: list[dict[str, Any]] = []  # answered to a pod list (label selectors are matched)
        self.workflows: dict[tuple[str, str], dict[str, Any]] = {}
        self.templates: dict[tuple[str, str], dict[str, Any]] = {}
        self.scripts: dict[str, list[dict[str, Any]]] = {}  # name -> statuses returned by successive GETs
        self.script_on_create: list[dict[str, Any]] = []  # the script given to each workflow created from now on
        self.requests: list[dict[str, Any]] = []
        self.secrets: set[tuple[str, str]] = set()  # (namespace, name) of the Secrets that exist
        self.secrets_forbidden = False  # reading Secrets answers 403, as for a least-privilege deployer
        self.create_errors: list[int] = []  # HTTP statuses the next creates answer with, one each, before any works
        self.applied: list[dict[str, Any]] = []  # server-side applies: {path, query, content_type, body}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeArgo:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_template(self, doc: dict[str, Any]) -> None:
        self.templates[(doc["metadata"]["namespace"], doc["metadata"]["name"])] = doc

    # -------------------------------------------------------------------------------- behaviour

    def _create(self, ns: str, wf: dict[str, Any]) -> tuple[int, Any]:
        if self.create_errors:
            code = self.create_errors.pop(0)
            return code, {"code": 14, "kind": "Status", "message": f"fake server: scripted HTTP {code}", "status": code}
        meta = wf.setdefault("metadata", {})
        suffix = "".join(random.choices(string.ascii_lowercase + string.digits, k=5))
        meta["name"] = meta.get("name") or meta["generateName"] + suffix
        meta["namespace"] = ns
        meta["uid"] = f"uid-{suffix}"
        meta["creationTimestamp"] = f"2026-11-28T04:{len(self.workflows):02d}:00Z"
        wf["status"] = {}
        self.workflows[(ns, meta["name"])] = wf
        if self.script_on_create:
            self.scripts[meta["name"]] = list(self.script_on_create)
        return 200, wf

    def _get(self, ns: str, name: str) -> tuple[int, Any]:
        wf = self.workflows.get((ns, name))
        if wf is None:
            return 404, {"code": 5, "message": f'workflows.argoproj.io "{name}" not found'}
        if self.scripts.get(name):
            wf["status"] = self.scripts[name].pop(0)
        return 200, wf

    def _list(self, ns: str, selector: str) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
        return [w for (n, _), w in self.workflows.items()
                if n == ns and all(w["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]

    def _shutdown(self, ns: str, name: str, mode: str) -> tuple[int, Any]:
        code, wf = self._get(ns, name)
        if code == 200:
            wf["spec"]["shutdown"] = mode
            wf["status"] = {"phase": "Failed", "message": f"Stopped with strategy '{mode}'"}
        return code, wf

    def _route(self, method: str, path: str, query: dict[str, str], body: Any, ctype: str) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if method == "PATCH" and "apply-patch" in ctype:
            self.applied.append({"path": path, "query": query, "body": body})
            self.live[path] = body
            return 200, body
        if method == "GET" and path in self.live and not path.startswith(KUBE) and "/secrets/" not in path:
            obj = dict(self.live[path])
            if obj.get("kind") == "Job":
                obj["status"] = (self.job_statuses.pop(0) if len(self.job_statuses) > 1 else
                                 (self.job_statuses or [COMPLETE])[0])
            return 200, obj
        if method == "GET" and len(parts) == 5 and parts[:2] == ["api", "v1"] and parts[4] == "pods":
            wanted = dict(p.split("=", 1) for p in query.get("labelSelector", "").split(",") if p)
            items = [p for p in self.pods if p["metadata"]["namespace"] == parts[3]
                     and all(p["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        if method == "GET" and not path.startswith(KUBE) and self._object_path(parts) and "secrets" not in parts:
            return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                         "message": f'{parts[-2]} "{parts[-1]}" not found'}
        if path.startswith(ARGO):
            ns, rest = parts[3], parts[4:]
            if method == "POST" and not rest:
                return self._create(ns, body["workflow"])
            if method == "GET" and not rest:
                items = self._list(ns, query.get("listOptions.labelSelector", ""))
                return 200, {"metadata": {}, "items": items or None}  # Argo sends null for an empty list
            if method == "GET" and len(rest) == 1:
                return self._get(ns, rest[0])
            if method == "PUT" and len(rest) == 2 and rest[1] in ("terminate", "stop"):
                return self._shutdown(ns, rest[0], rest[1].capitalize())
        if path.startswith(ARGO_TEMPLATES) and method == "GET":
            doc = self.templates.get((parts[3], parts[4]))
            return (200, doc) if doc else (404, {"code": 5, "message": "not found"})
        if path.startswith(KUBE) and parts[5] in ("workflows", "workflowtemplates"):
            ns, plural, rest = parts[4], parts[5], parts[6:]
            if plural == "workflowtemplates":
                doc = self.templates.get((ns, rest[0]))
                return (200, doc) if doc else (404, {"kind": "Status", "message": "not found", "code": 404})
            if method == "POST":
                code, out = self._create(ns, body)
                return (201 if code == 200 else code), out  # the API server answers a create with 201 Created
            if method == "GET" and not rest:
                return 200, {"items": self._list(ns, query.get("labelSelector", ""))}
            if method == "GET":
                return self._get(ns, rest[0])
            if method == "PATCH" and "merge-patch" in ctype:
                return self._shutdown(ns, rest[0], body["spec"]["shutdown"])
        if method == "GET" and path.startswith("/api/v1/namespaces/") and len(parts) == 6 and parts[4] == "secrets":
            if self.secrets_forbidden:
                return 403, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
                             "code": 403, "message": "secrets is forbidden"}
            if (parts[3], parts[5]) in self.secrets:
                meta = {"name": parts[5], "namespace": parts[3]}
                return 200, {"apiVersion": "v1", "kind": "Secret", "metadata": meta}
            return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                         "message": f'secrets "{parts[5]}" not found'}
        if method == "GET" and (path in ("/version", "/api", "/apis") or path.startswith(("/api/v1", "/apis/"))):
            return self._discovery(path)
        return 404, {"message": f"fake server: no route {method} {path}"}

    def _object_path(self, parts: list[str]) -> bool:
        """/api/v1/namespaces/NS/PLURAL/NAME or /apis/GROUP/VERSION/namespaces/NS/PLURAL/NAME of a served kind."""
        if parts[:2] == ["api", "v1"] and len(parts) == 6 and parts[2] == "namespaces":
            key, plural = ("", "v1"), parts[4]
        elif parts[:1] == ["apis"] and len(parts) == 7 and parts[3] == "namespaces":
            key, plural = (parts[1], parts[2]), parts[5]
        else:
            return False
        return any(p == plural for p, _, _ in self.kinds.get(key, []))

    def _discovery(self, path: str) -> tuple[int, Any]:
        if path == "/version":
            return 200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake"}
        if path == "/api":
            return 200, {"kind": "APIVersions", "versions": ["v1"]}
        if path == "/apis":
            groups = [{"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v}],
                       "preferredVersion": {"groupVersion": f"{g}/{v}", "version": v}} for g, v in self.kinds if g]
            return 200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        parts = [p for p in path.split("/") if p]
        key = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2] if len(parts) > 2 else "")
        if key not in self.kinds:
            return 404, {"message": "no such group"}
        gv = key[1] if not key[0] else f"{key[0]}/{key[1]}"
        resources = [{"name": n, "singularName": "", "namespaced": ns, "kind": k,
                      "verbs": ["create", "get", "list", "patch", "delete"]} for n, k, ns in self.kinds[key]]
        return 200, {"kind": "APIResourceList", "groupVersion": gv, "resources": resources}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self, method: str) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ctype = self.headers.get("Content-Type", "")
                body = (yaml.safe_load(raw) if "yaml" in ctype else json.loads(raw)) if raw else None
                with fake._lock:
                    fake.requests.append({"method": method, "path": url.path, "query": query, "body": body,
                                          "headers": dict(self.headers)})
                    if fake.token and self.headers.get("Authorization") != f"Bearer {fake.token}":
                        code, out = 401, {"code": 16, "message": "token not valid"}
                    else:
                        code, out = fake._route(method, url.path, query, body, ctype)
                data = json.dumps(out).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def kubeconfig(path: Any, server: str, token: str, context: str = "fake") -> Any:
    """A kubeconfig file pointing at `server` with a bearer token."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u", "namespace": "kai-ml"}}],
    }))
    return path
