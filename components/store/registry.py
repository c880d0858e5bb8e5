"""Model registry in the store: ``models/<name>/<version>/`` with ``checkpoint.pt`` and ``metadata.json``.

A version is complete once its ``metadata.json`` exists: the checkpoint is written first and the
metadata last, so an interrupted save never shows up as a version.

Saving is safe when several processes or machines train the same model at once: the next
version number is chosen and reserved under the store lock ``models/<name>/.lock``
(:func:`obscast.components.store.locking.store_lock`; an OS file lock on local disk, an
exclusively created lock object on S3), so two saves never take the same version.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from obscast.components.errors import ObscastError
from obscast.components.store.storage import Store

#: The distribution name of obscast (its package metadata gives :func:`package_version`).
DISTRIBUTION = "obscast"
#: Lock object of a model's version numbers, inside ``models/<name>/``.
LOCK_FILE = ".lock"
#: Marker written into a version folder when its number is reserved; removed once the version is complete.
RESERVATION_FILE = "reserved.json"


def package_version() -> str:
    """The installed obscast version from its package metadata (``"0.1.0"``), or ``"unknown"``
    when obscast runs without being installed (no ``obscast`` distribution on the path)."""
    try:
        return importlib_metadata.version(DISTRIBUTION)
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def _git_dir(root: Path) -> Path | None:
    """The git directory of a checkout rooted at ``root`` (``.git`` folder, or the ``gitdir:`` a
    ``.git`` file of a worktree points to), or None."""
    dot_git = root / ".git"
    if dot_git.is_dir():
        return dot_git
    if dot_git.is_file():
        text = dot_git.read_text().strip()
        if text.startswith("gitdir:"):
            path = Path(text.removeprefix("gitdir:").strip())
            path = path if path.is_absolute() else root / path
            return path if path.is_dir() else None
    return None


def _read_head(git_dir: Path) -> str | None:
    """The commit SHA of ``HEAD``, read from the git files (loose ref, then ``packed-refs``,
    looked up in the common directory of a worktree too)."""
    head = (git_dir / "HEAD").read_text().strip()
    if not head.startswith("ref:"):
        return head or None
    ref = head.removeprefix("ref:").strip()
    common = git_dir
    if (git_dir / "commondir").is_file():
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in dict.fromkeys((git_dir, common)):
        if (base / ref).is_file():
            return (base / ref).read_text().strip() or None
        if (base / "packed-refs").is_file():
            for line in (base / "packed-refs").read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name.strip() == ref and not line.startswith(("#", "^")):
                    return sha
    return None  # an unborn branch (no commit yet)


def git_commit() -> str | None:
    """The git commit of the running code when it runs from a git checkout, else None.

    The commit is read from the checkout's ``.git`` files (no ``git`` program needed). Only the
    checkout holding this very file counts: an installed package (``site-packages/obscast``) has
    none, even when the virtual environment lies inside some other repository. When the ``git``
    program is available, ``-dirty`` is appended if tracked files are modified (``git status
    --porcelain --untracked-files=no``); when it is missing or fails, the bare SHA is returned.

    Returns
    -------
    str or None
        ``"<sha>"``, ``"<sha>-dirty"``, or None outside a checkout (or when ``.git`` cannot be read).
    """
    root = Path(__file__).resolve().parents[2]
    try:
        git_dir = _git_dir(root)
        sha = _read_head(git_dir) if git_dir else None
    except OSError:
        return None
    if not sha:
        return None
    git = shutil.which("git")
    if git:
        try:
            status = subprocess.run([git, "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                                    text=True, timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return sha
        return sha + ("-dirty" if status else "")
    return sha


def code_version() -> str:
    """The version of the running code in one string: the package version, plus the git commit
    when running from a checkout, as a PEP 440 local version label.

    Returns
    -------
    str
        ``"0.1.0"`` (installed package), ``"0.1.0+g<sha>"`` or ``"0.1.0+g<sha>.dirty"`` (checkout);
        ``"unknown"`` for the package version when obscast is not installed.
    """
    commit = git_commit()
    if not commit:
        return package_version()
    return f"{package_version()}+g{commit.removesuffix('-dirty')}" + (".dirty" if commit.endswith("-dirty") else "")


def list_versions(store: Store, name: str) -> list[str]:
    """Complete versions of a model, oldest first (``v0001``, ``v0002``, ...)."""
    return [v for v in store.listdir("models", name) if v.startswith("v") and store.exists("models", name, v, "metadata.json")]


def reserve_version(store: Store, name: str, timeout: float = 600.0) -> str:
    """Choose the next version number of a model and reserve it, under the store lock.

    The number is one more than the highest version folder present, complete or not (a folder
    left by an interrupted save keeps its number). It is reserved by writing
    ``models/<name>/<version>/reserved.json`` (holder and time) before the lock is released, so
    a concurrent save on another process or machine sees the folder and takes the next number.

    Parameters
    ----------
    store : Store
        Local or S3 store.
    name : str
        Model name.
    timeout : float, optional
        Seconds to wait for the lock of the model's versions.

    Returns
    -------
    str
        The reserved version, ``v0001``, ``v0002``, ...

    Raises
    ------
    obscast.components.store.locking.LockTimeout
        If another save holds the lock for longer than ``timeout`` seconds.
    """
    from obscast.components.store.locking import store_lock

    with store_lock(store, f"models/{name}/{LOCK_FILE}", timeout=timeout):
        if not store.is_local:  # s3fs caches listings: list what is there now
            store.fs.invalidate_cache(store._path("models", name))
        existing = [int(v[1:]) for v in store.listdir("models", name) if v.startswith("v") and v[1:].isdigit()]
        version = f"v{max(existing, default=0) + 1:04d}"
        store.write_json({"holder": f"{socket.gethostname()}:{os.getpid()}", "time": pd.Timestamp.now(tz="UTC").isoformat()},
                         "models", name, version, RESERVATION_FILE)
    return version


def save_model(store: Store, name: str, state_dict: dict[str, torch.Tensor], metadata: dict[str, Any]) -> str:
    """Save a new version; returns its version string.

    The version number is reserved under the store lock (:func:`reserve_version`), so saves
    running at the same time in several processes or on several machines get distinct
    versions. Then the checkpoint goes first, ``metadata.json`` (which marks the version
    complete) last, outside the lock; the reservation marker is removed at the end.

    Parameters
    ----------
    store : Store
        Local or S3 store.
    name : str
        Model name (``models/<name>/``).
    state_dict : dict of str to torch.Tensor
        The model's weights (saved with :func:`torch.save`).
    metadata : dict
        The model card (:meth:`obscast.components.model.card.ModelCard.to_json`); ``name`` and
        ``version`` are added.

    Returns
    -------
    str
        The new version, ``v0001``, ``v0002``, ...

    Raises
    ------
    obscast.components.store.locking.LockTimeout
        If the lock of the model's versions cannot be taken within 600 s.
    """
    version = reserve_version(store, name)
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    store.write_bytes(buffer.getvalue(), "models", name, version, "checkpoint.pt")
    store.write_json({**metadata, "name": name, "version": version}, "models", name, version, "metadata.json")
    try:
        store.rm("models", name, version, RESERVATION_FILE)
    except OSError:  # the version is complete; a marker left behind is harmless
        pass
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
