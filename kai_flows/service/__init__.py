"""The coordinator as a service: HTTP API (api.py), bearer auth (auth.py), settings (config.py), request checks
(validation.py), one replica's process (server.py), and the Python client (client.py)."""

from kai_flows.service.client import ApiError, CoordinatorClient
from kai_flows.service.config import CoordinatorConfig

__all__ = ["ApiError", "CoordinatorClient", "CoordinatorConfig"]
