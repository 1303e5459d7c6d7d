"""`kai-flows submit` and `kai-flows deploy` through typer, against the fixture template and the stand-in server."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml
from fake_argo import FakeArgo
from typer.testing import CliRunner

from kai_flows.cli.submit import register
from kai_flows.compile import cluster_manifests, render_documents

SUCCEEDED = {"phase": "Succeeded", "nodes": {"n1": {"id": "n1", "name": "wf.aggregate", "displayName": "aggregate",
                                                    "type": "Pod", "phase": "Succeeded"}}}


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fixture_dir: Path) -> None:
    monkeypatch.setenv("KAI_TEMPLATES_DIR", str(fixture_dir))


def _run(cli: typer.Typer, *args: str):
    return CliRunner().invoke(cli, list(args))


def test_submit_dry_run_prints_the_workflow(cli, env) -> None:
    r = _run(cli, "submit", "image-quality", "-p", "images=uploads/default/j/", "-p", "quality=high", "--tier", "free",
             "--job-id", "j-1", "-l", "team=scan", "--dry-run")
    assert r.exit_code == 0, r.output
    wf = yaml.safe_load(r.stdout)
    assert wf["spec"]["arguments"]["parameters"] == [{"name": "images", "value": "uploads/default/j/"},
                                                     {"name": "quality", "value": "high"}]
    assert wf["metadata"]["labels"]["kai-flows.io/job-id"] == "j-1"
    assert wf["metadata"]["labels"]["team"] == "scan"
    assert wf["spec"]["podPriorityClassName"] == "low-priority-batch"


@pytest.mark.parametrize(("args", "message"), [
    (["-p", "images=uploads/default/k/", "-p", "colour=red"],
     "error: pipeline 'image-quality' declares no parameter 'colour'"),
    (["-p", "images=uploads/default/k/", "--queue", "urgent"], "error: unknown queue class 'urgent'"),
    (["-p", "images=uploads/default/k/", "--tier", "gold"], "error: unknown tier 'gold'"),
    ([], "error: pipeline 'image-quality': parameter 'images' is required"),
    (["-p", "images=uploads/default/k/", "--job-id", "a/b"], "error: job_id: job id 'a/b' is not a valid label value"),
])
def test_submit_bad_input_is_one_line_exit_2(cli, env, args: list[str], message: str) -> None:
    r = _run(cli, "submit", "image-quality", *args, "--dry-run")
    assert r.exit_code == 2
    assert r.stderr.startswith(message), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.output


def test_submit_bad_param_syntax(cli, env) -> None:
    r = _run(cli, "submit", "image-quality", "-p", "images", "--dry-run")
    assert r.exit_code == 2 and "'images' is not KEY=VALUE" in r.output


def test_submit_and_wait_over_rest(cli, env, monkeypatch: pytest.MonkeyPatch, quality_template: dict) -> None:
    with FakeArgo(token="t0k") as server:
        server.add_template(quality_template)
        monkeypatch.setenv("KAI_ARGO_SERVER", server.url)
        monkeypatch.setenv("KAI_ARGO_TOKEN", "t0k")
        server.script_on_create = [{"phase": "Running"}, SUCCEEDED]
        r = _run(cli, "submit", "image-quality", "-p", "images=uploads/default/j/", "--wait", "--timeout", "20")
        assert r.exit_code == 0, r.output
        name = r.stdout.splitlines()[0]
        assert name.startswith("image-quality-") and ("kai-ml", name) in server.workflows
        assert f"{name}: Succeeded" in r.stdout and "Succeeded  aggregate" in r.stdout

        server.script_on_create = [{"phase": "Failed", "message": "child failed"}]
        r = _run(cli, "submit", "image-quality", "-p", "images=uploads/default/j/", "--wait")
        assert r.exit_code == 1 and ": Failed (child failed)" in r.stdout

        monkeypatch.setenv("KAI_ARGO_TOKEN", "wrong")
        r = _run(cli, "submit", "image-quality", "-p", "images=uploads/default/j/")
        assert r.exit_code == 2 and "token not valid" in r.stderr


def test_deploy_dry_run_cluster_manifests(cli, tmp_path: Path) -> None:
    (tmp_path / "cluster").mkdir()
    for name, docs in cluster_manifests().items():
        (tmp_path / "cluster" / name).write_text(render_documents(docs))
    r = _run(cli, "deploy", "--dry-run", "--skip-workflows", "--source", str(tmp_path))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "would apply Namespace/kai-ml (cluster/00-namespace.yaml)"
    for new in ("ResourceQuota/kai-flows -n kai-ml (cluster/00-namespace.yaml)",
                "LimitRange/kai-flows -n kai-ml (cluster/00-namespace.yaml)",
                "ConfigMap/kai-coordinator-config -n kai-ml (cluster/10-coordinator-config.yaml)",
                "NetworkPolicy/kai-coordinator-migrate -n kai-ml (cluster/11-coordinator-migrations.yaml)",
                "NetworkPolicy/kai-coordinator -n kai-ml (cluster/12-coordinator.yaml)",
                "Service/kai-coordinator -n kai-ml (cluster/12-coordinator.yaml)",
                "Deployment/kai-coordinator -n kai-ml (cluster/12-coordinator.yaml)",
                "HorizontalPodAutoscaler/kai-coordinator -n kai-ml (cluster/12-coordinator.yaml)",
                "PodDisruptionBudget/kai-coordinator -n kai-ml (cluster/12-coordinator.yaml)",
                "ServiceMonitor/kai-coordinator -n kai-ml (cluster/13-coordinator-monitoring.yaml)",
                "PrometheusRule/kai-coordinator -n kai-ml (cluster/13-coordinator-monitoring.yaml)",
                "ConfigMap/kai-coordinator-dashboard -n kai-ml (cluster/14-coordinator-dashboard.yaml)"):
        assert f"would apply {new}" in lines, new
    [job] = [ln for ln in lines if ln.startswith("would apply Job/kai-coordinator-migrate-")]
    assert job.endswith("(cluster/11-coordinator-migrations.yaml); then waits for it to complete")
    assert lines.index(job) < lines.index("would apply Deployment/kai-coordinator -n kai-ml "
                                          "(cluster/12-coordinator.yaml)")
    assert "objects rendered and valid; nothing applied (--dry-run)" in r.stdout
    assert "by group: infrastructure 17, coordinator 14" in lines
    assert "needs Secret kai-ml/kai-ledger-database (keys url), created by the operator" in lines
    assert "needs Secret kai-ml/kai-coordinator-api (keys token), created by the operator" in lines

    r = _run(cli, "deploy", "--dry-run", "--skip-templates", "--source", str(tmp_path))  # the deprecated spelling
    assert r.exit_code == 0 and "by group: infrastructure 17, coordinator 14" in r.stdout.splitlines()
    assert r.stderr == "warning: --skip-templates is deprecated; use --skip-workflows\n"


def test_deploy_without_cluster_fails_cleanly(cli, tmp_path: Path) -> None:
    (tmp_path / "cluster").mkdir()
    for name, docs in cluster_manifests().items():
        (tmp_path / "cluster" / name).write_text(render_documents(docs))
    r = _run(cli, "deploy", "--skip-workflows", "--source", str(tmp_path))
    assert r.exit_code == 1
    assert r.stderr.startswith("error: no cluster configured") and "Traceback" not in r.output
