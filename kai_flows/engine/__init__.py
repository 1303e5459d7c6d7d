"""The local engine: runs a compiled Argo WorkflowTemplate on one machine (see runner.run_pipeline)."""

from kai_flows.engine.load import load_workflow
from kai_flows.engine.model import EngineError, TemplateError
from kai_flows.engine.runner import NodeResult, RunRequestError, RunResult, run_pipeline

__all__ = ["EngineError", "NodeResult", "RunRequestError", "RunResult", "TemplateError", "load_workflow",
           "run_pipeline"]
