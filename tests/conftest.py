from __future__ import annotations

from pathlib import Path

import pytest

BUNDLED = ["memory", "sqlite-file", "sqlite-memory"]


@pytest.fixture(params=BUNDLED)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store URL for every bundled backend."""
    kind = request.param
    if kind == "memory":
        return "memory://"
    if kind == "sqlite-file":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return "sqlite://"
