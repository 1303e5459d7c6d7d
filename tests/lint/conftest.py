from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An images/ folder with the Dockerfiles the fixtures' images need (quality, enhance, finalize)."""
    root = tmp_path_factory.mktemp("repo") / "images"
    for name in ("quality", "enhance", "finalize"):
        (root / name).mkdir(parents=True)
        (root / name / "Dockerfile").write_text("FROM scratch\n")
    return root
