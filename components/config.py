"""Validated configuration for obscast.

Configuration is a YAML file (``configs/default.yaml`` is the embedded default) loaded into
pydantic models. Unknown keys are errors, durations and lengths must carry a unit, and every
value can be overridden from the environment with the prefix ``OBSCAST_`` and ``__`` between
nested keys, for example ``OBSCAST_STORE=s3://bucket/obscast`` or
``OBSCAST_TRAIN__EPOCHS=5`` (pydantic-settings).

Relative file paths in a YAML file are resolved against the directory holding that file, so a
configuration works from any working directory.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from components.errors import ConfigError
from components.nature import NatureRunConfig
from components.osse import ErrorModel

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "default.yaml"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(min|h|d)\s*$")
_LENGTH_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|km)\s*$")


def parse_duration(value: Any) -> pd.Timedelta:
    """Parse a duration with an explicit unit.

    Parameters
    ----------
    value : str or pandas.Timedelta
        ``"30min"``, ``"6h"`` or ``"2d"``; a bare number is refused because its unit would be a
        guess.

    Returns
    -------
    pandas.Timedelta

    Raises
    ------
    ValueError
        If the value has no unit or an unknown one.
    """
    if isinstance(value, pd.Timedelta):
        return value
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ValueError(f"expected a duration with a unit (min, h or d), e.g. '6h'; found {value!r}")
    return pd.Timedelta(float(match.group(1)), unit={"min": "min", "h": "h", "d": "D"}[match.group(2)])


def parse_length_km(value: Any) -> float:
    """Parse a length with an explicit unit (``"300 km"`` or ``"5000 m"``) into kilometres.

    Raises
    ------
    ValueError
        If the value has no unit or an unknown one.
    """
    match = _LENGTH_RE.match(str(value))
    if not match or isinstance(value, (int, float)):
        raise ValueError(f"expected a length with a unit (m or km), e.g. '300 km'; found {value!r}")
    number = float(match.group(1))
    return number / 1000.0 if match.group(2) == "m" else number


Duration = Annotated[pd.Timedelta, BeforeValidator(parse_duration)]
LengthKm = Annotated[float, BeforeValidator(parse_length_km)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=False)


class SourceConfig(_Strict):
    """One observation source: a WMO observation type read from one or more files.

    ``paths`` entries may be glob patterns; ``store:raw/...`` names files inside a local store.
    """

    kind: Literal["synop", "temp", "aircraft", "satellite"]
    paths: list[str] = Field(min_length=1, description="BUFR files or glob patterns")


class GriddedConfig(_Strict):
    """One gridded dataset (reanalysis or analysis) read from GRIB files."""

    paths: list[str] = Field(min_length=1)


class IngestConfig(_Strict):
    """How observations are cut into windows ``(end - window, end]`` (DESIGN.md §2)."""

    window: Duration = Field(default_factory=lambda: pd.Timedelta(hours=6))
    row_chunk: int = Field(default=65536, gt=0, description="rows per zarr chunk of observation tables")


class LatentGridConfig(_Strict):
    n_lat: int = Field(default=32, gt=1)
    n_lon: int = Field(default=64, gt=1)


class ModelConfig(_Strict):
    """Architecture of encoders, processor and decoders."""

    name: str = Field(default="obscast", pattern=r"^[A-Za-z0-9_.-]+$")
    latent_grid: LatentGridConfig = Field(default_factory=LatentGridConfig)
    latent_channels: int = Field(default=48, gt=0)
    hidden_channels: int = Field(default=64, gt=0)
    n_blocks: int = Field(default=4, gt=0)
    step: Duration = Field(default_factory=lambda: pd.Timedelta(hours=12))
    encoder_lengthscale: LengthKm = 500.0
    decoder_lengthscale: LengthKm = 300.0
    profile_levels_hpa: list[float] = Field(default_factory=lambda: [850.0, 500.0, 250.0])
    residual: bool = Field(default=True, description="add the gridded analysis to the decoded increment")


class TrainConfig(_Strict):
    """Training on the gridded dataset's within-member transitions."""

    dataset: str = "era5_sample"
    train_members: list[int] = Field(default_factory=lambda: list(range(8)))
    test_members: list[int] = Field(default_factory=lambda: [8, 9])
    epochs: int = Field(default=60, gt=0)
    batch_size: int = Field(default=4, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    rollout_steps: int = Field(default=1, gt=0)
    station_points: int = Field(default=512, ge=0, description="random grid points per sample for the station decoder")
    source_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _disjoint(self) -> "TrainConfig":
        overlap = set(self.train_members) & set(self.test_members)
        if overlap:
            raise ValueError(f"train_members and test_members overlap: {sorted(overlap)}")
        return self


class ForecastConfig(_Strict):
    init_time: datetime | None = Field(default=None, description="None: the first init time with a full verifying rollout")
    n_steps: int = Field(default=2, gt=0)
    station_source: str = "synop"


class VerifyConfig(_Strict):
    variables: list[str] | None = None


class RetrainConfig(_Strict):
    """``obscast retrain``: a challenger warm-started from the champion and the promotion gate
    (components/promotion.py: score = mean over channels and lead times of RMSE / climatology RMSE)."""

    margin: float = Field(default=0.01, ge=0.0, lt=1.0, description="required relative score improvement (0.01 = 1 %)")
    epochs: int | None = Field(default=None, gt=0, description="challenger epochs (None: train.epochs)")
    learning_rate: float | None = Field(default=None, gt=0, description="challenger learning rate (None: train.learning_rate)")


class Period(_Strict):
    """A closed time interval ``[start, end]`` (UTC)."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> "Period":
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class OsseTrainingConfig(_Strict):
    """Architecture and optimisation of the OSSE model (see components/obs_training.py)."""

    history: int = Field(default=2, ge=1, description="observation windows per source before init")
    latent_channels: int = Field(default=64, gt=0)
    processor_hidden: int = Field(default=64, gt=0)
    n_blocks: int = Field(default=3, gt=0)
    decoder_hidden: int = Field(default=64, gt=0)
    analysis_blocks: int = Field(default=2, ge=0, description="residual blocks turning the fused state into the analysis")
    coarsen: int = Field(default=2, ge=1, description="output grid = nature grid averaged over coarsen x coarsen")
    climatology: Literal["zonal", "gridpoint"] = "zonal"
    rollout_schedule: list[int] = Field(default_factory=lambda: [1, 2, 4, 4, 8, 8], min_length=1)
    learning_rate: float = Field(default=2e-3, gt=0)
    batch_size: int = Field(default=8, gt=0)
    source_dropout: float = Field(default=0.3, ge=0.0, lt=1.0)
    max_minutes: float | None = Field(default=None, gt=0)


class OsseConfig(_Strict):
    """The observing-system simulation experiment (DESIGN.md §4): nature run, simulated
    observations at the real networks' positions, and the temporal split of its period."""

    nature: NatureRunConfig = Field(default_factory=NatureRunConfig)
    error_model: ErrorModel = Field(default_factory=ErrorModel)
    networks: str = "../data/networks"
    training: OsseTrainingConfig = Field(default_factory=OsseTrainingConfig)
    train_period: Period
    validation_period: Period
    test_period: Period

    @model_validator(mode="after")
    def _split(self) -> "OsseConfig":
        if not (self.train_period.end < self.validation_period.start and self.validation_period.end < self.test_period.start):
            raise ValueError("periods must be ordered and disjoint: train < validation < test")
        times = self.nature.times()
        first, last = pd.Timestamp(times[0]), pd.Timestamp(times[-1])
        for name in ("train_period", "validation_period", "test_period"):
            period = getattr(self, name)
            if pd.Timestamp(period.start) < first or pd.Timestamp(period.end) > last:
                raise ValueError(f"{name} [{period.start}, {period.end}] is outside the nature run [{first}, {last}]")
        return self


class Config(BaseSettings):
    """The whole obscast configuration.

    Attributes
    ----------
    store : str
        Where everything is written: a local directory or ``s3://bucket/prefix`` (s3fs).
    storage_options : dict
        Passed to fsspec/s3fs, e.g. ``{"endpoint_url": "http://127.0.0.1:8333"}``. Credentials
        are best left to the standard ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
        variables; they are never written to logs, artifacts or metadata.
    """

    model_config = SettingsConfigDict(
        env_prefix="OBSCAST_", env_nested_delimiter="__", extra="forbid", arbitrary_types_allowed=True
    )

    store: str = "store"
    storage_options: dict[str, Any] = Field(default_factory=dict)
    sources: dict[str, SourceConfig] = Field(default_factory=dict)
    gridded: dict[str, GriddedConfig] = Field(default_factory=dict)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    forecast: ForecastConfig = Field(default_factory=ForecastConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    retrain: RetrainConfig = Field(default_factory=RetrainConfig)
    osse: OsseConfig | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment overrides the YAML file (which arrives as init kwargs).
        return (env_settings, init_settings)

    @field_validator("store")
    @classmethod
    def _store_url(cls, value: str) -> str:
        if "://" in value and not value.startswith(("s3://", "file://", "memory://")):
            raise ValueError(f"expected a local path or an s3:// URL, found {value!r}")
        return value

    def public_dict(self) -> dict[str, Any]:
        """The configuration as JSON-able data with secrets removed (for metadata and artifacts)."""
        data = self.model_dump(mode="json")
        data["storage_options"] = {
            k: ("***" if any(s in k.lower() for s in ("key", "secret", "token", "password")) else v)
            for k, v in data["storage_options"].items()
        }
        return data


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    for section in ("sources", "gridded"):
        for entry in (data.get(section) or {}).values():
            if isinstance(entry, dict) and isinstance(entry.get("paths"), list):
                entry["paths"] = [
                    p if "://" in str(p) or str(p).startswith("store:") or Path(p).is_absolute() else str((base / p).resolve())
                    for p in entry["paths"]
                ]
    osse = data.get("osse")
    if isinstance(osse, dict) and isinstance(osse.get("networks"), str) and not Path(osse["networks"]).is_absolute():
        osse["networks"] = str((base / osse["networks"]).resolve())
    store = data.get("store")
    if isinstance(store, str) and "://" not in store and not Path(store).is_absolute() and "OBSCAST_STORE" not in os.environ:
        # A relative store is relative to the working directory, where the user runs obscast.
        data["store"] = str(Path(store).resolve())


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load and validate a YAML configuration.

    Parameters
    ----------
    path : path-like, optional
        The YAML file; the embedded ``configs/default.yaml`` when None.
    overrides : dict, optional
        Top-level keys that replace the file's (used by the command line, e.g. ``{"store": ...}``).

    Returns
    -------
    Config

    Raises
    ------
    ConfigError
        One line naming the file, the offending key and what was expected: a missing file, bad
        YAML, an unknown key, a value of the wrong type or unit.
    """
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"{path}: configuration file not found (expected a YAML file)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    data.update(overrides or {})
    _resolve_paths(data, path.parent)
    try:
        return Config(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{path}: unknown key '{key}' (check the spelling; see configs/default.yaml)") from exc
        raise ConfigError(f"{path}: key '{key}': {err['msg']}") from exc
