"""Model registry in the store: ``models/<name>/<version>/`` with ``checkpoint.pt`` and ``metadata.json``.

A version is complete once its ``metadata.json`` exists: the checkpoint is written first and the
metadata last, so an interrupted save never shows up as a version.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import torch

from obscast.components.errors import ObscastError
from obscast.components.store.storage import Store


def code_version() -> str:
    """The git commit of the running code (``"<sha>"``, ``"<sha>-dirty"``), or ``"unknown"``."""
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def list_versions(store: Store, name: str) -> list[str]:
    """Complete versions of a model, oldest first (``v0001``, ``v0002``, ...)."""
    return [v for v in store.listdir("models", name) if v.startswith("v") and store.exists("models", name, v, "metadata.json")]


def save_model(store: Store, name: str, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> str:
    """Save a new version; returns its version string.

    The checkpoint goes first, ``metadata.json`` (which marks the version complete) last.
    """
    existing = [int(v[1:]) for v in store.listdir("models", name) if v.startswith("v") and v[1:].isdigit()]
    version = f"v{max(existing, default=0) + 1:04d}"
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    store.write_bytes(buffer.getvalue(), "models", name, version, "checkpoint.pt")
    store.write_json({**metadata, "name": name, "version": version}, "models", name, version, "metadata.json")
    return version


def load_model_files(store: Store, name: str, version: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load ``(state_dict, metadata)`` of a version (the newest when None), on the CPU.

    Raises
    ------
    ObscastError
        If the model or version does not exist in the store.
    """
    versions = list_versions(store, name)
    if not versions:
        raise ObscastError(f"{store.url('models', name)}: no trained model (run `obscast train` first)")
    version = version or versions[-1]
    if version not in versions:
        raise ObscastError(f"{store.url('models', name)}: version {version!r} not found (have {versions})")
    metadata = store.read_json("models", name, version, "metadata.json")
    state = torch.load(io.BytesIO(store.read_bytes("models", name, version, "checkpoint.pt")), map_location="cpu", weights_only=True)
    return state, metadata


CHAMPION_FILE = "champion.json"


def champion(store: Store, name: str) -> str | None:
    """The champion version (the one forecasts use), or None when none was promoted."""
    if not store.exists("models", name, CHAMPION_FILE):
        return None
    return store.read_json("models", name, CHAMPION_FILE)["version"]


def promote(store: Store, name: str, version: str, reason: str = "") -> dict[str, Any]:
    """Make ``version`` the champion; the previous champion is kept in the history for rollback.

    The record is one object written atomically, so an interrupted promotion leaves the old
    champion in place.

    Raises
    ------
    ObscastError
        If the version does not exist (complete) in the registry.
    """
    versions = list_versions(store, name)
    if version not in versions:
        raise ObscastError(f"{store.url('models', name)}: cannot promote {version!r}: not a complete version (have {versions})")
    record = store.read_json("models", name, CHAMPION_FILE) if store.exists("models", name, CHAMPION_FILE) else {"history": []}
    history = list(record.get("history", []))
    if record.get("version"):
        history.append(record["version"])
    new = {"version": version, "history": history, "reason": reason}
    store.write_json(new, "models", name, CHAMPION_FILE)
    return new


def rollback(store: Store, name: str) -> dict[str, Any]:
    """Restore the previous champion.

    Raises
    ------
    ObscastError
        If there is no earlier champion to go back to.
    """
    if not store.exists("models", name, CHAMPION_FILE):
        raise ObscastError(f"{store.url('models', name)}: no champion to roll back")
    record = store.read_json("models", name, CHAMPION_FILE)
    if not record.get("history"):
        raise ObscastError(f"{store.url('models', name)}: champion {record['version']} has no predecessor to roll back to")
    history = list(record["history"])
    new = {"version": history.pop(), "history": history, "reason": f"rollback from {record['version']}"}
    store.write_json(new, "models", name, CHAMPION_FILE)
    return new


def update_metadata(store: Store, name: str, version: str, fields: dict[str, Any]) -> dict[str, Any]:
    """Add or replace top-level keys of a version's ``metadata.json`` (e.g. a retrain decision).

    The checkpoint is never touched; the metadata is rewritten as one object (atomically on
    local disk), so the version stays complete.

    Raises
    ------
    ObscastError
        If the version does not exist (complete) in the registry.
    """
    if version not in list_versions(store, name):
        raise ObscastError(f"{store.url('models', name)}: cannot update {version!r}: not a complete version")
    meta = {**store.read_json("models", name, version, "metadata.json"), **fields, "name": name, "version": version}
    store.write_json(meta, "models", name, version, "metadata.json")
    return meta


#: ``metadata["role"]`` of a version trained by ``obscast retrain`` (promoted or not).
CHALLENGER = "challenger"


def resolve_version(store: Store, name: str, version: str | None) -> str | None:
    """The version to use: the one asked for, else the champion, else None (the newest).

    Without a champion, retrain challengers (``metadata["role"] == "challenger"``) that were
    never promoted are skipped: then the newest other version is returned, so an interrupted
    retrain cannot put an unverified model into use.
    """
    if version or champion(store, name):
        return version or champion(store, name)
    versions = list_versions(store, name)
    for v in reversed(versions):
        if store.read_json("models", name, v, "metadata.json").get("role") != CHALLENGER:
            return None if v == versions[-1] else v
    return None
