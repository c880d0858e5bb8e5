"""Model registry: versions, champion, promotion and rollback in a real store."""

from __future__ import annotations

import pytest
import torch

from obscast.components.store import registry
from obscast.components.errors import ObscastError
from obscast.components.store.storage import Store


def test_versions_champion_promote_rollback(tmp_path):
    store = Store(str(tmp_path))
    v1 = registry.save_model(store, "m", {"w": torch.ones(2)}, {"loss_curve": [1.0]})
    v2 = registry.save_model(store, "m", {"w": torch.zeros(2)}, {"loss_curve": [0.5]})
    assert (v1, v2) == ("v0001", "v0002") and registry.list_versions(store, "m") == [v1, v2]
    # without a champion the newest is used
    assert registry.resolve_version(store, "m", None) is None
    state, meta = registry.load_model_files(store, "m")
    assert meta["version"] == v2 and torch.equal(state["w"], torch.zeros(2))
    registry.promote(store, "m", v1)
    registry.promote(store, "m", v2)
    assert registry.champion(store, "m") == v2
    assert registry.rollback(store, "m")["version"] == v1
    assert registry.resolve_version(store, "m", None) == v1
    with pytest.raises(ObscastError, match="no predecessor"):
        registry.rollback(store, "m")
    with pytest.raises(ObscastError, match="not a complete version"):
        registry.promote(store, "m", "v0009")


def test_incomplete_version_is_invisible(tmp_path):
    """A save interrupted before metadata.json is written never becomes a version."""
    store = Store(str(tmp_path))
    registry.save_model(store, "m", {"w": torch.ones(1)}, {})
    store.write_bytes(b"partial checkpoint", "models", "m", "v0002", "checkpoint.pt")
    assert registry.list_versions(store, "m") == ["v0001"]
    assert registry.load_model_files(store, "m")[1]["version"] == "v0001"
    assert registry.save_model(store, "m", {"w": torch.ones(1)}, {}) == "v0003"
