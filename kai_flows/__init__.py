"""kai-flows: photo-to-3D pipelines as typed Python DAGs, compiled to Argo WorkflowTemplates.

The pieces, by module: `policy` (pools, priority classes, queues, tiers), `step` (declare a step),
`pipeline` (build a DAG), `compile` (WorkflowTemplates and cluster manifests), `entrypoint` (what every
container runs), `engine` (run the compiled YAML locally), `store` (S3 artifacts), `lint`, `submit`, `ledger`.
"""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:  # lazy: `import kai_flows` stays light for the step entry point
    if name in ("run_pipeline", "RunResult"):
        from kai_flows.engine import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'kai_flows' has no attribute {name!r}")
