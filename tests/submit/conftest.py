from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the helpers beside the tests: schemas, fake_argo

FIXTURES = HERE / "fixtures"
REPO = HERE.parents[1]


@pytest.fixture
def fixture_dir() -> Path:
    return FIXTURES


@pytest.fixture
def quality_template() -> dict:
    return yaml.safe_load((FIXTURES / "image-quality.yaml").read_text())


@pytest.fixture(autouse=True)
def _no_ambient_cluster(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Tests other than the live ones never reach a real cluster by accident."""
    if request.node.get_closest_marker("live") is None:
        for var in ("KAI_ARGO_SERVER", "KAI_ARGO_TOKEN", "KUBERNETES_SERVICE_HOST", "KAI_TEMPLATES_DIR"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live: needs a configured cluster (KAI_ARGO_SERVER or a kubeconfig)")
