"""Configuration: validation errors name the file and key; units are required; env overrides."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from obscast.components.config import DEFAULT_CONFIG, load_config, parse_duration, parse_length_km
from obscast.components.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_samples_config_resolves_sample_paths():
    config = load_config(DEFAULT_CONFIG.parent / "samples.yaml")
    for src in config.sources.values():
        for p in src.paths:
            assert Path(p).is_file(), p
    assert config.ingest.window == pd.Timedelta(hours=6)
    assert config.model.step == pd.Timedelta(hours=12)
    e = config.experiment
    assert e.split.by == "member" and e.target.dataset == "era5_sample" and "era5_sample" in e.inputs


def test_default_config_is_the_osse():
    """`obscast run` with no arguments runs the OSSE: simulated sources of all four WMO
    families and satellite winds (AMV) from the store's raw/osse, a >= 100-day spin-up, a 6 h
    cycle, and a test period long enough for 5-day forecasts."""
    config = load_config()
    assert config.osse is not None and config.osse.nature.spinup_days >= 100
    assert {s.kind for s in config.sources.values()} == {"synop", "temp", "aircraft", "satellite", "amv"}
    assert all(p.startswith("store:raw/osse/") for s in config.sources.values() for p in s.paths)
    assert config.model.step == config.ingest.window == pd.Timedelta(hours=6)
    assert config.forecast.n_steps * config.model.step == pd.Timedelta(days=5)
    test = config.experiment.split.test
    assert config.experiment.split.by == "period" and config.experiment.target.dataset == "nature"
    assert pd.Timestamp(test.end) - pd.Timestamp(test.start) > pd.Timedelta(days=10)


EXPERIMENT = """sources:
  synop: {kind: synop, paths: [a]}
gridded:
  era5: {paths: [b]}
"""


@pytest.mark.parametrize(
    "text, match",
    [
        ("experiment:\n  inputs: [nope]\n  target: {dataset: era5}\n  split: {by: member, train: [0], validation: [1], test: [2]}\n", "neither"),
        ("experiment:\n  inputs: [synop]\n  target: {dataset: era5}\n  split: {by: member, train: [0, 2], validation: [1], test: [2]}\n", "test members"),
        ("experiment:\n  inputs: [synop]\n  target: {dataset: era5}\n  split: {by: period, train: [0], validation: [1], test: [2]}\n", "start, end"),
        ("experiment:\n  inputs: [synop]\n  target: {dataset: missing}\n  split: {by: member, train: [0], validation: [1], test: [2]}\n", "not a `gridded` entry"),
        ("experiment:\n  inputs: [synop]\n  target: {dataset: era5, stations: temp}\n  split: {by: member, train: [0], validation: [1], test: [2]}\n", "stations"),
    ],
)
def test_experiment_is_validated(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, EXPERIMENT + text))


def test_innovations_need_cycling(tmp_path):
    with pytest.raises(ConfigError, match="model.innovations needs model.cycling"):
        load_config(write(tmp_path, EXPERIMENT + "model:\n  cycling: false\n  innovations: true\n"))
    assert load_config(write(tmp_path, EXPERIMENT + "model:\n  innovations: true\n")).model.innovations


def test_training_needs_an_experiment(tmp_path):
    config = load_config(write(tmp_path, EXPERIMENT))
    with pytest.raises(ConfigError, match="no 'experiment' section"):
        config.require_experiment()


@pytest.mark.parametrize(
    "text, key",
    [
        ("stor: x\n", "'stor'"),
        ("train:\n  epoch: 3\n", "'train.epoch'"),
        ("sources:\n  s:\n    kind: synop\n    paths: [a]\n    window: 6h\n", "'sources.s.window'"),
    ],
)
def test_unknown_keys_are_errors(tmp_path, text, key):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and key in message and "unknown key" in message and "\n" not in message


@pytest.mark.parametrize("text, key", [("ingest:\n  window: 6\n", "ingest.window"), ("model:\n  encoder_lengthscale: 500\n", "model.encoder_lengthscale"),
                                       ("sources:\n  s:\n    kind: metar\n    paths: [a]\n", "sources.s.kind")])
def test_wrong_units_and_values_are_errors(tmp_path, text, key):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert key in str(err.value)


def test_units_convert():
    assert parse_duration("90min") == pd.Timedelta(minutes=90)
    assert parse_duration("2d") == pd.Timedelta(days=2)
    assert parse_length_km("5000 m") == 5.0
    with pytest.raises(ValueError):
        parse_duration("6 hours")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "a: [1,\n"))


def test_environment_overrides_file(tmp_path, monkeypatch):
    path = write(tmp_path, "train:\n  epochs: 3\n")
    monkeypatch.setenv("OBSCAST_TRAIN__EPOCHS", "7")
    monkeypatch.setenv("OBSCAST_STORE", "s3://bucket/prefix")
    config = load_config(path)
    assert config.train.epochs == 7 and config.store == "s3://bucket/prefix"


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("sources:\n  s:\n    kind: temp\n    paths: [../x.bufr]\n")
    assert load_config(path).sources["s"].paths == [str(tmp_path / "x.bufr")]


def test_secrets_never_in_public_dict(tmp_path):
    path = write(tmp_path, "storage_options:\n  key: AKIA123\n  secret: s3cr3t\n  endpoint_url: http://127.0.0.1:8333\n")
    public = load_config(path).public_dict()
    assert public["storage_options"] == {"key": "***", "secret": "***", "endpoint_url": "http://127.0.0.1:8333"}


def test_every_config_key_is_read_by_the_code():
    """A key that is accepted must be used: every leaf key of the model, train, verify and
    forecast sections appears as an attribute access somewhere in the package."""
    import re

    root = DEFAULT_CONFIG.parents[1]
    code = "\n".join(p.read_text() for d in ("components", "flows") for p in (root / d).rglob("*.py"))
    config = load_config()
    for section in ("model", "train", "verify", "forecast", "retrain", "ingest"):
        for key in type(getattr(config, section)).model_fields:
            assert re.search(rf"\.{key}\b", code), f"{section}.{key} is accepted but never read"
