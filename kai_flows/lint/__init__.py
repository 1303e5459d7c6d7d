"""`kai-flows lint`: Argo's schema (strict), Kubernetes schemas, argo lint's rules and Kai's policy."""

from kai_flows.lint.documents import Document, collect_files, load_documents
from kai_flows.lint.problem import LintError, Problem
from kai_flows.lint.runner import LintResult, lint_documents, lint_paths, lint_result

__all__ = [
    "Document", "LintError", "LintResult", "Problem", "collect_files", "lint_documents", "lint_paths", "lint_result",
    "load_documents",
]
