"""Fixtures for the store suite: one real SeaweedFS for the session (see kai_flows.store.testing)."""

from kai_flows.store.testing import seaweed_server, store_factory

__all__ = ["seaweed_server", "store_factory"]
