"""The compiled WorkflowTemplates (`make templates`), shipped as package data: kai_flows.resources."""
