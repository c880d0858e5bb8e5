"""Retrain with the promotion gate: the gate on real score tables, a worse challenger kept out, a
better one promoted, and a retrain killed mid-training that leaves the champion in use.

All flow tests start from a copy of the session's trained store (``pipeline_run``: the samples
configuration, a few epochs), against the session's real Prefect server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from obscast.components.store import registry
from obscast.components.errors import ObscastError
from obscast.components.verification.metrics import score_table
from obscast.components.verification.promotion import decide
from obscast.components.store.storage import Store

REPO = Path(__file__).resolve().parents[2]
SAMPLES_CONFIG = REPO / "configs" / "samples.yaml"
NAME = "obscast-era5"


@pytest.fixture
def store_copy(pipeline_run, tmp_path) -> Path:
    """A private copy of the trained store with v0001 promoted champion."""
    src, _ = pipeline_run
    dst = tmp_path / "store"
    shutil.copytree(src, dst)
    registry.promote(Store(str(dst)), NAME, "v0001", reason="test set-up")
    return dst


@pytest.fixture
def real_table(pipeline_run) -> pd.DataFrame:
    """The verify flow's RMSE table of the trained model: (channel, lead_time) x (model, persistence, climatology)."""
    store, result = pipeline_run
    ds = xr.open_zarr(result["scores"], consolidated=False, chunks=None).load()
    return score_table({s: ds.sel(system=s) for s in ds["system"].values}, "rmse")


def with_model(table: pd.DataFrame, values) -> pd.DataFrame:
    out = table.copy()
    out["model"] = values
    return out


# -- the gate -----------------------------------------------------------------------------------

def test_decide_formula_on_real_scores(real_table):
    """Champion: the trained model; challenger: persistence, scored on the same held-out forecasts."""
    challenger = with_model(real_table, real_table["persistence"])
    d = decide(real_table, challenger, margin=0.01, champion_name="v0001", challenger_name="v0002")
    s_model = float(np.mean(real_table["model"] / real_table["climatology"]))
    s_persist = float(np.mean(real_table["persistence"] / real_table["climatology"]))
    assert d.champion_score == pytest.approx(s_model) and d.challenger_score == pytest.approx(s_persist)
    assert d.improvement == pytest.approx(1 - s_persist / s_model)
    assert d.promote == (s_persist < 0.99 * s_model)
    assert list(d.table.columns) == ["champion", "challenger", "climatology", "champion_norm", "challenger_norm"]
    assert len(d.table) == len(real_table) == 4 * 3  # 4 channels (T, Z at 850 and 500 hPa) x 3 lead times
    assert ("promote challenger v0002" if d.promote else "keep champion v0001") in d.reason


def test_decide_margin(real_table):
    better = with_model(real_table, real_table["model"] * 0.97)  # 3 % lower RMSE everywhere
    d = decide(real_table, better, margin=0.01)
    assert d.promote and d.improvement == pytest.approx(0.03) and "above the margin 1.00%" in d.reason
    d = decide(real_table, better, margin=0.05)
    assert not d.promote and "not above the margin 5.00%" in d.reason and "+3.00%" in d.reason
    same = decide(real_table, real_table, margin=0.0)
    assert not same.promote and same.improvement == 0.0
    worse = decide(real_table, with_model(real_table, real_table["model"] * 1.05), margin=0.0)
    assert not worse.promote and worse.improvement == pytest.approx(-0.05) and worse.reason.startswith("keep champion")


def test_decide_diverged_challenger_and_bad_input(real_table):
    broken = real_table["model"].copy()
    broken.iloc[2] = np.nan
    d = decide(real_table, with_model(real_table, broken), margin=0.0)
    assert not d.promote and d.challenger_score == float("inf") and "non-finite" in d.reason
    assert json.dumps(d.to_dict())  # JSON-able for metadata.json
    with pytest.raises(ValueError, match="same channels and lead times"):
        decide(real_table, real_table.iloc[1:], margin=0.0)
    with pytest.raises(ValueError, match=r"margin must be a relative improvement in \[0, 1\)"):
        decide(real_table, real_table, margin=1.5)
    with pytest.raises(ValueError, match="missing columns \\['climatology'\\]"):
        decide(real_table, real_table.drop(columns="climatology"), margin=0.0)


# -- the flow -----------------------------------------------------------------------------------

def test_worse_challenger_keeps_champion(store_copy, prefect_api):
    from obscast.flows.retrain import retrain_flow

    st = Store(str(store_copy))
    before = (store_copy / "models" / NAME / "champion.json").read_bytes()
    # A destructive learning rate for one epoch ruins the warm-started weights.
    out = retrain_flow(config_path=str(SAMPLES_CONFIG), store=str(store_copy), epochs=1, learning_rate=0.05, margin=0.0)
    assert out["challenger"] == "v0002" and out["incumbent"] == "v0001"
    assert out["challenger_score"] > out["champion_score"] and not out["promoted"]
    assert out["reason"].startswith("keep champion v0001")
    assert (store_copy / "models" / NAME / "champion.json").read_bytes() == before
    meta = st.read_json("models", NAME, "v0002", "metadata.json")
    assert meta["role"] == "challenger" and meta["warm_start_from"] == "v0001" and len(meta["loss_curve"]) == 1
    assert meta["retrain"]["promoted"] is False and meta["retrain"]["decision"]["challenger_score"] == pytest.approx(out["challenger_score"])
    assert "| score S (mean normalised RMSE) | all |" in out["markdown"] and "**Decision:** keep champion v0001" in out["markdown"]
    assert Path(out["table"]).read_text() == out["markdown"]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["retrain-decision"])))
    assert out["markdown"] in [a.data for a in artifacts], "no retrain-decision artifact on the server"
    # verify (like forecast) defaults to the champion, not the newest version
    from obscast.flows.verify import verify_flow

    assert Path(verify_flow(config_path=str(SAMPLES_CONFIG), store=str(store_copy))["table"]).parent.name == "v0001"


def test_unpromoted_challenger_is_never_the_default(tmp_path):
    """Without a champion the newest version is used, except a retrain challenger never promoted."""
    st = Store(str(tmp_path))
    v1 = registry.save_model(st, "m", {"w": torch.ones(1)}, {})
    assert registry.resolve_version(st, "m", None) is None  # the newest
    registry.save_model(st, "m", {"w": torch.zeros(1)}, {"role": registry.CHALLENGER})
    assert registry.resolve_version(st, "m", None) == v1
    assert registry.load_model_files(st, "m", registry.resolve_version(st, "m", None))[1]["version"] == v1
    registry.promote(st, "m", "v0002")
    assert registry.resolve_version(st, "m", None) == "v0002"
    with pytest.raises(ObscastError, match="cannot update 'v0009'"):
        registry.update_metadata(st, "m", "v0009", {"x": 1})
    assert registry.update_metadata(st, "m", v1, {"x": 1})["x"] == 1 and st.read_json("models", "m", v1, "metadata.json")["version"] == v1


def test_first_model_then_better_challenger_is_promoted(pipeline_run, tmp_path, prefect_api):
    from obscast.flows.retrain import retrain_flow

    src, _ = pipeline_run
    store = tmp_path / "store"
    shutil.copytree(src, store, ignore=shutil.ignore_patterns("models", "scores", "forecasts"))  # ingested data only
    st = Store(str(store))
    # No model at all: trained from scratch (1 epoch) and promoted as the first champion.
    first = retrain_flow(config_path=str(SAMPLES_CONFIG), store=str(store), epochs=1)
    assert first["incumbent"] is None and first["promoted"] and first["champion"] == "v0001"
    assert "first model becomes the champion" in first["reason"]
    # A challenger warm-started from it and trained 3 epochs more is better by more than the margin.
    out = retrain_flow(config_path=str(SAMPLES_CONFIG), store=str(store), epochs=3, margin=0.005)
    assert out["incumbent"] == "v0001" and out["challenger"] == "v0002"
    assert out["challenger_score"] < out["champion_score"] * (1 - 0.005), out["reason"]
    assert out["promoted"] and out["champion"] == "v0002" and out["reason"].startswith("promote challenger v0002")
    record = st.read_json("models", NAME, "champion.json")
    assert record["version"] == "v0002" and record["history"] == ["v0001"] and record["reason"] == out["reason"]
    meta = st.read_json("models", NAME, "v0002", "metadata.json")
    assert meta["warm_start_from"] == "v0001" and meta["retrain"]["promoted"] is True
    # Warm start: the challenger's first epoch starts from the champion's weights, far below a cold start.
    assert meta["loss_curve"][0] < first_loss(st, "v0001")


def first_loss(st: Store, version: str) -> float:
    return st.read_json("models", NAME, version, "metadata.json")["loss_curve"][0]


def test_killed_retrain_leaves_champion(store_copy, prefect_api):
    st = Store(str(store_copy))
    # A newer, non-champion version: the default forecast must still use the champion v0001.
    state, meta = registry.load_model_files(st, NAME, "v0001")
    registry.save_model(st, NAME, {k: v * 0.5 if v.is_floating_point() else v for k, v in state.items()}, {**meta, "note": "newer"})
    champion_file = store_copy / "models" / NAME / "champion.json"
    before = champion_file.read_bytes()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "obscast.flows.cli", "retrain", "--config", str(SAMPLES_CONFIG), "--store", str(store_copy), "--epochs", "40"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 300
        for line in proc.stdout:
            seen.append(line)
            if "epoch 1/40 " in line:
                break
            assert time.monotonic() < deadline, "".join(seen[-20:])
        else:
            pytest.fail("retrain ended before training started:\n" + "".join(seen[-20:]))
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert champion_file.read_bytes() == before
    assert registry.list_versions(st, NAME) == ["v0001", "v0002"]
    fc = subprocess.run([sys.executable, "-m", "obscast.flows.cli", "forecast", "--config", str(SAMPLES_CONFIG), "--store", str(store_copy), "--json"],
                        cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=300)
    assert fc.returncode == 0, fc.stderr[-2000:]
    result = json.loads(fc.stdout[fc.stdout.index("{"):])
    assert Path(result["forecast"]).parent == store_copy / "forecasts" / NAME / "v0001"
    assert xr.open_zarr(result["forecast"], consolidated=False).attrs["model_version"] == "v0001"


def test_retrain_config_is_validated(tmp_path):
    from obscast.components.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_text("retrain: {margin: 0.02, epochs: 3}\n")
    rc = load_config(path).retrain
    assert (rc.margin, rc.epochs, rc.learning_rate) == (0.02, 3, None)
    path.write_text("retrain: {margin: 1.5}\n")
    with pytest.raises(ConfigError, match="key 'retrain.margin'"):
        load_config(path)
    path.write_text("retrain: {promote_margin: 0.1}\n")
    with pytest.raises(ConfigError, match="unknown key 'retrain.promote_margin'"):
        load_config(path)
