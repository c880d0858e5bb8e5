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

from obscast.components.errors import ConfigError
from obscast.components.osse.nature_config import NatureRunConfig
from obscast.components.osse.errors import ErrorModel
from obscast.components.nwp.baseline import NwpBaselineConfig

# The repository root in a checkout, the installed ``obscast`` package folder otherwise: configs/
# and data/networks/ are package data at the same places (pyproject.toml), so both layouts work.
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


class NetcdfField(_Strict):
    """One variable of a netCDF file that is not CF: its name in the file, and what the file
    lacks (``obscast.components.obs.readers.netcdf``)."""

    variable: str = Field(min_length=1, description="variable name in the file")
    units: str | None = Field(default=None, description="its unit (UDUNITS spelling, e.g. degC, hPa, knot) when the file has none or a wrong one")
    fill_value: float | None = Field(default=None, description="a value that means missing, besides _FillValue/missing_value")


class NetcdfTime(_Strict):
    """The time variable of a station file that is not CF."""

    variable: str = Field(min_length=1)
    format: str | None = Field(default=None, description="strptime format of text or integer times, e.g. '%Y%m%d%H%M'")
    units: str | None = Field(default=None, description="CF '<unit> since <reference>' when the file has none or an undecodable one")

    @model_validator(mode="after")
    def _one(self) -> "NetcdfTime":
        if self.format is not None and self.units is not None:
            raise ValueError("give either a time 'format' (text times) or 'units' (numeric times), not both")
        return self


class NetcdfMapping(_Strict):
    """Declarative mapping of a netCDF station file that is not CF onto an observation table:
    file variable -> CF standard name, with units, fill value and time format."""

    latitude: NetcdfField
    longitude: NetcdfField
    time: NetcdfTime
    station_id: str | None = Field(default=None, description="variable of the station identifiers (text or integer)")
    surface_altitude: NetcdfField | None = None
    pressure: NetcdfField | None = None
    variables: dict[str, NetcdfField] = Field(min_length=1, description="CF standard name -> file variable")

    @field_validator("variables")
    @classmethod
    def _cf_names(cls, value: dict[str, NetcdfField]) -> dict[str, NetcdfField]:
        from obscast.components.obs.variables import VARIABLES

        unknown = [k for k in value if k not in VARIABLES]
        if unknown:
            raise ValueError(f"{unknown} are not CF standard names obscast knows; expected some of {sorted(VARIABLES)}")
        return value


class NetcdfGridded(_Strict):
    """Per-dataset overrides for gridded netCDF files whose attributes are missing or undecodable."""

    variables: dict[str, str] = Field(default_factory=dict, description="file variable -> CF standard name (else its standard_name attribute)")
    units: dict[str, str] = Field(default_factory=dict, description="file variable -> unit, replacing a missing or wrong units attribute")
    time_units: str | None = Field(default=None, description="CF '<unit> since <reference>' of the time coordinate")
    calendar: str | None = Field(default=None, description="CF calendar of the time coordinate (default standard)")


class EarthkitSource(_Strict):
    """An earthkit-data source the raw files come from (``earthkit.data.from_source(source, *args,
    **kwargs)``), e.g. ``{source: url, args: ["https://.../file.bufr"]}``, ``cds``, ``mars``,
    ``ecmwf-open-data``: fetched into earthkit's cache, then read like local files."""

    source: Literal["file", "url", "cds", "mars", "ecmwf-open-data"]
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class SourceConfig(_Strict):
    """One observation source: a WMO observation type read from one or more files.

    ``paths`` entries may be glob patterns; ``store:raw/...`` names files inside the store, and
    ``s3://`` globs objects on S3 (the store's ``storage_options``). ``netcdf`` maps a netCDF
    station file that is not CF; ``earthkit`` fetches the files from an earthkit-data source.
    """

    kind: Literal["synop", "temp", "aircraft", "satellite", "amv"]
    paths: list[str] = Field(default_factory=list, description="BUFR or netCDF files or glob patterns")
    netcdf: NetcdfMapping | None = Field(default=None, description="mapping of a netCDF station file that is not CF")
    earthkit: EarthkitSource | None = Field(default=None, description="remote files through earthkit-data")

    @model_validator(mode="after")
    def _files(self) -> "SourceConfig":
        if not self.paths and self.earthkit is None:
            raise ValueError("a source needs 'paths' or an 'earthkit' source")
        return self


class GriddedConfig(_Strict):
    """One gridded dataset (reanalysis or analysis) read from GRIB or netCDF files."""

    paths: list[str] = Field(default_factory=list)
    netcdf: NetcdfGridded | None = Field(default=None, description="overrides for netCDF files with missing or undecodable attributes")
    earthkit: EarthkitSource | None = Field(default=None, description="remote files through earthkit-data")

    @model_validator(mode="after")
    def _files(self) -> "GriddedConfig":
        if not self.paths and self.earthkit is None:
            raise ValueError("a gridded dataset needs 'paths' or an 'earthkit' source")
        return self


class IngestConfig(_Strict):
    """How observations are cut into windows ``(end - window, end]`` (docs/architecture.md)."""

    window: Duration = Field(default_factory=lambda: pd.Timedelta(hours=6))
    row_chunk: int = Field(default=65536, gt=0, description="rows per zarr chunk of observation tables")
    dask_address: str | None = Field(default=None, description="Dask scheduler (tcp://host:port) that reads the backfill's windows (None: this machine)")


class LatentGridConfig(_Strict):
    n_lat: int = Field(default=32, gt=1)
    n_lon: int = Field(default=64, gt=1)


class ModelConfig(_Strict):
    """Architecture of encoders, fusion, processor and decoders (``obscast.components.model``)."""

    name: str = Field(default="obscast", pattern=r"^[A-Za-z0-9_.-]+$")
    latent_grid: LatentGridConfig = Field(default_factory=LatentGridConfig)
    step: Duration = Field(default_factory=lambda: pd.Timedelta(hours=6), description="processor time step Δt")
    latent_channels: int = Field(default=64, gt=0)
    processor_hidden: int = Field(default=64, gt=0)
    n_blocks: int = Field(default=3, gt=0, description="residual blocks of the processor")
    decoder_hidden: int = Field(default=64, gt=0)
    encoder_hidden: int = Field(default=64, gt=0, description="hidden width of the SetConv encoders' MLPs")
    analysis_blocks: int = Field(default=2, ge=0, description="residual blocks turning the fused state into the analysis")
    history: int = Field(default=1, ge=1, description="observation windows per source before init")
    cycling: bool = Field(default=True, description="the background of each analysis is the model's own Δt forecast")
    innovations: bool = Field(default=False, description="cycling: the SetConv encoders also take observation minus background")
    encoder_lengthscale: LengthKm | None = Field(default=None, description="initial SetConv kernel lengthscale (None: the latent grid spacing)")
    station_lengthscale: LengthKm | None = Field(default=None, description="initial station decoder lengthscale (None: half the grid spacing)")
    pressure_levels_hpa: list[float] = Field(
        default_factory=lambda: [850.0, 700.0, 500.0, 400.0, 300.0, 250.0], min_length=1,
        description="layers of profile sources (TEMP, aircraft) in their normalisation and encoders",
    )
    coarsen: int = Field(default=2, ge=1, description="output grid = target grid averaged over coarsen x coarsen")
    climatology: Literal["zonal", "gridpoint"] = "zonal"

    @model_validator(mode="after")
    def _innovations_need_cycling(self) -> ModelConfig:
        if self.innovations and not self.cycling:
            raise ValueError("model.innovations needs model.cycling: the innovations are taken against the cycled background")
        return self


class TrainConfig(_Strict):
    """Optimisation (``obscast.components.training``), the same for every experiment."""

    epochs: int = Field(default=5, gt=0)
    batch_size: int = Field(default=8, gt=0, description="global batch: samples (or parallel cycles) per optimiser step")
    learning_rate: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-5, ge=0)
    rollout_schedule: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 8], min_length=1, description="rollout steps per epoch, the last repeats")
    source_dropout: float = Field(default=0.3, ge=0.0, lt=1.0)
    station_points: int = Field(default=256, ge=0, description="station positions drawn per batch for the station loss")
    station_weight: float = Field(default=1.0, ge=0.0)
    analysis_weight: float = Field(default=0.5, ge=0.0, description="weight of the loss on the decoded analysis at init")
    grad_clip: float = Field(default=1.0, ge=0.0, description="gradient norm clip (0: none)")
    spinup_cycles: int = Field(default=4, ge=0, description="cycling: cycles that only spin the background up before each stretch")
    backprop_cycles: int = Field(default=1, ge=1, description="cycling: consecutive cycles per optimiser step, the gradient flowing through their backgrounds")
    max_minutes: float | None = Field(default=None, gt=0, description="stop after the epoch that passes this training time")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = Field(default=1, ge=1, description="processes (GPUs) per node; > 1 trains with distributed data parallel")
    num_nodes: int = Field(default=1, ge=1, description="nodes of a multi-node run (launched by torchrun or a cluster)")
    strategy: Literal["auto", "ddp"] = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] | None = Field(default=None, description="None: bf16-mixed on CUDA, 32-true on the CPU")
    checkpoint_dir: str | None = Field(default=None, description="where last.ckpt is written (None: <store>/checkpoints/<model.name> on a local store, none on S3)")
    checkpoint_every_n_steps: int | None = Field(default=None, gt=0, description="also checkpoint every n optimiser steps (always at each epoch end)")
    resume: bool = Field(default=False, description="resume from the last checkpoint of an interrupted run")


class ForecastConfig(_Strict):
    init_time: datetime | None = Field(default=None, description="None: the first init time of the test split")
    n_steps: int = Field(default=20, gt=0)


class VerifyConfig(_Strict):
    """Verification on the test split (``obscast.components.verification``)."""

    channels: list[str] | None = Field(default=None, description="channels in the tables and plot (None: all)")
    max_stations: int = Field(default=1000, ge=0, description="stations scored (evenly spaced subset; 0: no station scores)")
    withhold_every: int = Field(default=4, ge=0, description="every k-th test init is also scored with each source withheld (0: never)")
    spinup_cycles: int = Field(default=8, ge=0, description="cycling: windows run from a cold start before the first scored or forecast init")
    probes: list[Literal["rotate90", "rotate180", "mirror", "thin50", "thin10"]] = Field(
        default_factory=list, description="OSSE network probes: the test split re-simulated with the observing network rotated "
        "in longitude, mirrored between hemispheres or thinned, scored against the unmoved network (obscast.components.verification.probes)")
    probe_every: int = Field(default=8, gt=0, description="network probes: every k-th test init is scored")
    probe_steps: int = Field(default=4, gt=0, description="network probes: lead steps scored (at most forecast.n_steps)")
    probe_days: int | None = Field(default=None, gt=0, description="network probes: only the first days of the test split (after the spin-up; None: all of it)")
    withhold_steps: int | None = Field(default=None, gt=0, description="lead steps scored with a source withheld (None: forecast.n_steps)")


class RetrainConfig(_Strict):
    """``obscast retrain``: a challenger warm-started from the champion and the promotion gate
    (``obscast.components.verification.promotion``: score = mean over channels and lead times of
    RMSE / climatology RMSE)."""

    margin: float = Field(default=0.01, ge=0.0, lt=1.0, description="required relative score improvement (0.01 = 1 %)")
    epochs: int | None = Field(default=None, gt=0, description="challenger epochs (None: train.epochs)")
    learning_rate: float | None = Field(default=None, gt=0, description="challenger learning rate (None: train.learning_rate)")


class EnsembleConfig(_Strict):
    """The ensemble of data assimilations (``obscast.components.model.ensemble``): members
    perturb the observations by their errors (``osse.error_model``), cycle and forecast; no
    retraining. Scored on test inits (``obscast.components.verification.ensemble``)."""

    members: int = Field(default=8, ge=2, description="ensemble size (the fair CRPS needs at least 2)")
    seed: int = Field(default=0, description="seeds every perturbation (the ensemble is deterministic given it)")
    inits: int = Field(default=4, gt=0, description="test inits scored (at most)")
    every: int = Field(default=4, gt=0, description="score every k-th test init")
    latent_noise: float = Field(default=0.0, ge=0.0, description="extra Gaussian noise on each member's analysis, in units of its spatial std per latent channel (0: none)")
    quantiles: list[float] = Field(default_factory=lambda: [0.1, 0.5, 0.9], min_length=1, description="station quantiles of the product (fractions)")
    thresholds: dict[str, list[float]] = Field(
        default_factory=lambda: {"air_temperature": [273.15]},
        description="exceedance thresholds per CF variable, in its unit (K, Pa, m s-1): P(value > threshold) at the stations",
    )

    @field_validator("quantiles")
    @classmethod
    def _fractions(cls, value: list[float]) -> list[float]:
        if any(not 0.0 < q < 1.0 for q in value) or sorted(set(value)) != list(value):
            raise ValueError(f"expected increasing distinct fractions in (0, 1), found {value}")
        return value


class Period(_Strict):
    """A closed time interval ``[start, end]`` (UTC)."""

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ordered(self) -> "Period":
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class TargetConfig(_Strict):
    """What the model must predict."""

    dataset: str = Field(description="gridded dataset in the store (gridded/<dataset>.zarr): 'nature' (OSSE) or a `gridded` entry")
    stations: str | None = Field(default="synop", description="observation source whose station positions the station decoder serves")
    station_channels: list[str] | None = Field(default=None, description="station decoder channels (None: surface pressure and lowest-level T, u, v present)")


class SplitConfig(_Strict):
    """Train / validation / test split: by period (``{start, end}`` each) or by member (lists)."""

    by: Literal["period", "member"]
    train: Period | list[int]
    validation: Period | list[int]
    test: Period | list[int]

    @model_validator(mode="after")
    def _consistent(self) -> "SplitConfig":
        parts = (self.train, self.validation, self.test)
        if self.by == "period":
            if not all(isinstance(p, Period) for p in parts):
                raise ValueError("split by period needs {start, end} for train, validation and test")
            if not (self.train.end < self.validation.start and self.validation.end < self.test.start):
                raise ValueError("periods must be ordered and disjoint: train < validation < test")
        else:
            if not all(isinstance(p, list) and p for p in parts):
                raise ValueError("split by member needs non-empty member lists for train, validation and test")
            if set(self.train) & set(self.test) or set(self.validation) & set(self.test):
                raise ValueError("test members must not be used for training or validation")
        return self


class ExperimentConfig(_Strict):
    """One experiment definition for every configuration: inputs, target and split.

    The OSSE differs from real data only in where the raw files come from (``osse``, the
    simulate stage) and in its target (``nature``, the nature run)."""

    inputs: list[str] = Field(min_length=1, description="observation sources and/or gridded datasets fed to the encoders")
    target: TargetConfig
    split: SplitConfig


class OsseConfig(_Strict):
    """The observing-system simulation experiment (docs/architecture.md): nature run and
    simulated observations at the real networks' positions (the simulate stage only)."""

    nature: NatureRunConfig = Field(default_factory=NatureRunConfig)
    error_model: ErrorModel = Field(default_factory=ErrorModel)
    networks: str = "../data/networks"
    nwp: NwpBaselineConfig | None = Field(default=None, description="the classical NWP baseline (cycled 3D-Var, identical and fraternal twins); none when absent")


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
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    experiment: ExperimentConfig | None = None
    osse: OsseConfig | None = None

    @model_validator(mode="after")
    def _experiment(self) -> "Config":
        e = self.experiment
        if e is None:  # enough to ingest; train, forecast and verify need an experiment
            return self
        known = set(self.sources) | set(self.gridded)
        unknown = [n for n in e.inputs if n not in known]
        if unknown:
            raise ValueError(f"experiment.inputs {unknown} are neither `sources` nor `gridded` entries")
        gridded_inputs = [n for n in e.inputs if n in self.gridded]
        if any(n != e.target.dataset for n in gridded_inputs):
            raise ValueError(f"gridded inputs {gridded_inputs} must be the target dataset {e.target.dataset!r} (its analysis at init)")
        if self.osse is not None:
            if e.target.dataset != "nature":
                raise ValueError("an OSSE's experiment.target.dataset is 'nature' (the nature run)")
            if e.split.by == "period":
                times = self.osse.nature.times()
                first, last = pd.Timestamp(times[0]), pd.Timestamp(times[-1])
                for name in ("train", "validation", "test"):
                    period = getattr(e.split, name)
                    if pd.Timestamp(period.start) < first or pd.Timestamp(period.end) > last:
                        raise ValueError(f"experiment.split.{name} [{period.start}, {period.end}] is outside the nature run [{first}, {last}]")
        elif e.target.dataset not in self.gridded:
            raise ValueError(f"experiment.target.dataset {e.target.dataset!r} is not a `gridded` entry")
        if e.target.stations is not None and e.target.stations not in self.sources:
            raise ValueError(f"experiment.target.stations {e.target.stations!r} is not a `sources` entry")
        return self

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

    def require_experiment(self) -> ExperimentConfig:
        """The ``experiment`` section.

        Raises
        ------
        ConfigError
            If the configuration has none (it can ingest, but not train, forecast or verify).
        """
        if self.experiment is None:
            raise ConfigError("the configuration has no 'experiment' section (inputs, target, split): "
                              "it can ingest, but not train, forecast or verify (see configs/default.yaml)")
        return self.experiment

    def public_dict(self) -> dict[str, Any]:
        """The configuration as JSON-able data with secrets removed (for metadata and artifacts)."""
        data = self.model_dump(mode="json")

        def masked(options: dict[str, Any]) -> dict[str, Any]:
            return {k: ("***" if any(s in k.lower() for s in ("key", "secret", "token", "password")) else v) for k, v in options.items()}

        data["storage_options"] = masked(data["storage_options"])
        for section in ("sources", "gridded"):  # earthkit-data request keywords may carry credentials
            for entry in data[section].values():
                if entry.get("earthkit"):
                    entry["earthkit"]["kwargs"] = masked(entry["earthkit"]["kwargs"])
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
