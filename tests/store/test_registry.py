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


# One training's save, run as its own process: waits for the start signal, saves ``n`` versions
# whose weights name the process and the save, and prints {version: weight value}.
SAVER = r"""
import json, sys, time
from pathlib import Path

import torch

from obscast.components.store import registry
from obscast.components.store.storage import Store

url, options, ready, go, worker, n = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
store = Store(url, options)
ready.touch()
while not go.exists():
    time.sleep(0.002)
saved = {}
for i in range(n):
    value = float(100 * worker + i)
    version = registry.save_model(store, "m", {"w": torch.full((20_000,), value)}, {"worker": worker, "save": i})
    saved[version] = value
print(json.dumps(saved))
"""


def concurrent_saves(tmp_path, url: str, options: dict, processes: int = 3, saves: int = 3) -> dict[str, float]:
    """Start ``processes`` real processes that save ``saves`` versions each at the same instant;
    returns every version they were given with the weight value each wrote."""
    import json
    import os
    import subprocess
    import sys
    import time

    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    go = tmp_path / "go"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), url, json.dumps(options), str(tmp_path / f"ready{k}"), str(go), str(k), str(saves)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for k in range(processes)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in range(processes)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    go.touch()  # all of them are past their imports: they save at the same instant
    given: list[dict[str, float]] = []
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
        given.append(json.loads(out.strip().splitlines()[-1]))
    versions = [v for g in given for v in g]
    assert len(versions) == len(set(versions)) == processes * saves, f"versions taken twice: {given}"
    return {v: value for g in given for v, value in g.items()}


def check_complete(store: Store, saved: dict[str, float]) -> None:
    """Every version is complete and holds the weights of the save it was given to."""
    assert registry.list_versions(store, "m") == sorted(saved) == [f"v{i:04d}" for i in range(1, len(saved) + 1)]
    for version, value in saved.items():
        state, meta = registry.load_model_files(store, "m", version)
        assert meta["version"] == version and float(100 * meta["worker"] + meta["save"]) == value
        assert torch.equal(state["w"], torch.full((20_000,), value))
        assert sorted(store.listdir("models", "m", version)) == ["checkpoint.pt", "metadata.json"]  # reservation marker removed


def test_concurrent_saves_get_distinct_versions(tmp_path):
    """Trainings saving at the same moment (three processes, three saves each, one local store)
    each get their own version, and every version is complete with its own weights."""
    store_dir = tmp_path / "store"
    saved = concurrent_saves(tmp_path, str(store_dir), {})
    check_complete(Store(str(store_dir)), saved)


@pytest.mark.slow
def test_concurrent_saves_on_s3(tmp_path):
    """The same on S3 (SeaweedFS): the version number is reserved under the S3 lock object."""
    import os

    from obscast.infra.prefect_server import temporary_env
    from obscast.infra.s3_server import DEV_KEY, DEV_SECRET, s3_server

    keys = {k: os.environ.get(k, d) for k, d in (("AWS_ACCESS_KEY_ID", DEV_KEY), ("AWS_SECRET_ACCESS_KEY", DEV_SECRET))}
    with s3_server(tmp_path / "seaweedfs") as endpoint, temporary_env(**keys):
        options = {"endpoint_url": endpoint}
        Store("s3://registry-test", options).fs.mkdir("registry-test")
        saved = concurrent_saves(tmp_path, "s3://registry-test/obscast", options)
        check_complete(Store("s3://registry-test/obscast", options), saved)
        assert not Store("s3://registry-test/obscast", options).exists("models", "m", registry.LOCK_FILE)  # released


def test_model_card_records_package_version_and_commit():
    """The card records the installed package version and, in a git checkout, git's own HEAD
    commit (the package read without a checkout is tested in tests/infra/test_packaging.py)."""
    import shutil
    import subprocess
    from importlib import metadata
    from pathlib import Path

    from obscast.components.model.card import ModelCard

    card = ModelCard(config={}, model_args={}, statistics={}, data={}, step_hours=6.0, code_version=registry.code_version(), loss_curve=[1.0])
    assert card.package_version == metadata.version("obscast") != "unknown"
    root = Path(registry.__file__).resolve().parents[2]
    if not (root / ".git").exists() or not shutil.which("git"):
        pytest.skip("not a git checkout")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True).stdout.strip())
    assert card.git_commit == head + ("-dirty" if dirty else "")
    assert card.code_version == f"{card.package_version}+g{head}" + (".dirty" if dirty else "")
    assert card.to_json()["git_commit"] == card.git_commit
