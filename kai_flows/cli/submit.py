"""`kai-flows submit` and `kai-flows deploy`: run a pipeline on a cluster; put the templates there first."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

from kai_flows.policy import NAMESPACE


def _fail(e: Exception, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _pairs(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        out[key] = value
    return out


def submit_cmd(
    pipeline: Annotated[str, typer.Argument(help="Pipeline (WorkflowTemplate) name, e.g. image-quality.")],
    param: Annotated[list[str], typer.Option("-p", "--param", help="Parameter KEY=VALUE (repeatable).")] = [],  # noqa: B006
    queue: Annotated[str | None, typer.Option("--queue", help="Queue class (default: the tier's).")] = None,
    tier: Annotated[str | None, typer.Option("--tier", help="Tier: free, pro, enterprise, internal.")] = None,
    label: Annotated[list[str], typer.Option("-l", "--label", help="Extra label KEY=VALUE (repeatable).")] = [],  # noqa: B006
    job_id: Annotated[str | None, typer.Option("--job-id", help="Job id label (default: a new one).")] = None,
    tenant: Annotated[str, typer.Option("--tenant", help="Whose job: its input keys must be under "
                                        "uploads/<tenant>/ (or a prefix granted in $KAI_TENANT_INPUT_PREFIXES).")]
    = "default",
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = NAMESPACE,
    context: Annotated[str | None, typer.Option("--context", help="kubeconfig context (Kubernetes backend).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it to the end, with progress.")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds --wait waits.")] = 3600.0,
    download: Annotated[Path | None, typer.Option("--download", help="With --wait: fetch outputs here.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the Workflow; create nothing.")] = False,
) -> None:
    """Submit a pipeline to Argo (Argo Server when KAI_ARGO_SERVER is set, else the Kubernetes API)."""
    from kai_flows.submit import SubmitError, SubmitRequest, Submitter

    try:
        fields = {"job_id": job_id} if job_id else {}
        req = SubmitRequest(pipeline=pipeline, parameters=_pairs(param, "--param"), queue=queue, tier=tier,
                            labels=_pairs(label, "--label"), namespace=namespace, tenant=tenant, **fields)
    except ValueError as e:  # pydantic's ValidationError
        raise _fail(_first_error(e)) from None
    sub = Submitter(context=context)
    try:  # refused before or at creation: exit 2
        if dry_run:
            typer.echo(yaml.safe_dump(sub.build(req), sort_keys=False), nl=False)
            return
        name = sub.submit(req)
    except SubmitError as e:
        raise _fail(e, 2) from None
    typer.echo(name)
    if not wait:
        return
    try:  # created, but following or fetching failed: exit 1
        status = sub.wait(name, namespace, timeout=timeout, progress=True)
        typer.echo(f"{status.name}: {status.phase}" + (f" ({status.message})" if status.message else ""))
        for node, phase in status.node_phases.items():
            typer.echo(f"  {phase:10} {node}")
        for art in status.artifacts:
            typer.echo(f"  artifact {art.ref}: s3://{art.bucket or '<repository bucket>'}/{art.key}")
        if download is not None and status.phase == "Succeeded":
            outputs = sub.template(pipeline, namespace).outputs or None
            for path in sub.download(status, download, outputs=outputs):
                typer.echo(f"  downloaded {path}")
    except SubmitError as e:
        raise _fail(e, 1) from None
    if status.phase != "Succeeded":
        raise typer.Exit(1)


def _first_error(e: ValueError) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        err = errors()[0]
        return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
    return str(e)


def deploy_cmd(
    context: Annotated[str | None, typer.Option("--context", help="kubeconfig context (default: current).")] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = NAMESPACE,
    registry: Annotated[str | None, typer.Option("--registry", help="Image registry (compiles afresh).")] = None,
    tag: Annotated[str | None, typer.Option("--tag", help="Image tag (compiles afresh).")] = None,
    image_lock: Annotated[Path | None, typer.Option(
        "--image-lock", help="Pin images by the digests `images build --push --lock` recorded.")] = None,
    require_digests: Annotated[bool, typer.Option(
        "--require-digests", help="Refuse any image not pinned by a registry digest (production).")] = False,
    insecure_artifact_repository: Annotated[bool, typer.Option(
        "--insecure-artifact-repository", help="Reach the S3 artifact repository without TLS.")] = False,
    kube_api_cidr: Annotated[list[str] | None, typer.Option(
        "--kube-api-cidr", help="Where step pods may reach the Kubernetes API (repeatable; compiles afresh).")] = None,
    database_cidr: Annotated[list[str] | None, typer.Option(
        "--database-cidr", help="Where the coordinator reaches PostgreSQL (repeatable; compiles afresh).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Render and validate; no cluster needed.")] = False,
    skip_infrastructure: Annotated[bool, typer.Option(
        "--skip-infrastructure", help="Skip the namespace, quota, priority classes, steps' RBAC, queues, artifact "
        "repository and step network policy.")] = False,
    skip_coordinator: Annotated[bool, typer.Option(
        "--skip-coordinator", help="Skip the coordinator service (migrations, Deployment, monitoring).")] = False,
    skip_workflows: Annotated[bool, typer.Option("--skip-workflows", help="Skip the WorkflowTemplates.")] = False,
    skip_cluster: Annotated[bool, typer.Option(
        "--skip-cluster", help="Deprecated: --skip-infrastructure --skip-coordinator.")] = False,
    skip_templates: Annotated[bool, typer.Option(
        "--skip-templates", help="Deprecated: --skip-workflows.")] = False,
    migration_timeout: Annotated[float, typer.Option(
        "--migration-timeout", min=1, help="Seconds to wait for the migration Job to complete.")] = 660.0,
    source: Annotated[Path | None, typer.Option("--source", help="Generated YAML folder.")] = None,
) -> None:
    """Apply the infrastructure, the coordinator (after its migration Job completes), then the WorkflowTemplates,
    by server-side apply (like the guide's deploy.sh)."""
    from kai_flows.deploy import DeployError, DeployOptions, Manifest, component, deploy, groups, required_secrets

    if skip_cluster:
        typer.echo("warning: --skip-cluster is deprecated; use --skip-infrastructure --skip-coordinator", err=True)
    if skip_templates:
        typer.echo("warning: --skip-templates is deprecated; use --skip-workflows", err=True)
    opts = DeployOptions(context=context, namespace=namespace, registry=registry, tag=tag, image_lock=image_lock,
                         require_digests=require_digests, insecure_artifact_repository=insecure_artifact_repository,
                         kube_api_cidrs=tuple(kube_api_cidr or ()), database_cidrs=tuple(database_cidr or ()),
                         dry_run=dry_run, skip_infrastructure=skip_infrastructure, skip_coordinator=skip_coordinator,
                         skip_workflows=skip_workflows, skip_cluster=skip_cluster, skip_templates=skip_templates,
                         migration_timeout=migration_timeout)
    if source is not None:
        opts.source = source

    def applied(m: Manifest) -> None:
        typer.echo(f"applied {m.label}")

    try:
        manifests = deploy(opts, on_applied=applied, on_warning=lambda line: typer.echo(f"warning: {line}", err=True),
                           on_event=typer.echo)
    except DeployError as e:
        raise _fail(e, 1) from None
    counts = ", ".join(f"{g} {sum(component(m) == g for m in manifests)}" for g in groups(opts))
    if dry_run:
        for m in manifests:
            wait = "; then waits for it to complete" if m.kind == "Job" else ""
            typer.echo(f"would apply {m.label} ({m.source}){wait}")
        typer.echo(f"{len(manifests)} objects rendered and valid; nothing applied (--dry-run)")
        typer.echo(f"by group: {counts}")
        for (namespace, name), keys in sorted(required_secrets(manifests).items()):
            typer.echo(f"needs Secret {namespace}/{name} (keys {', '.join(sorted(keys))}), created by the operator")
    else:
        typer.echo(f"{len(manifests)} objects applied ({counts})")


def register(app: typer.Typer) -> None:
    app.command("submit")(submit_cmd)
    app.command("deploy")(deploy_cmd)
