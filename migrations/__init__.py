"""The ledger's SQL migrations, shipped as package data: kai_flows.resources."""
