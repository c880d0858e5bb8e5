"""Network probes: the OSSE's observing network moved while the truth (the nature run) stays.

A trained model is scored, unchanged, on observations simulated from the same nature run at
*moved* positions (:mod:`obscast.components.verification.probes`). The Held-Suarez climate is
zonally symmetric and symmetric between the hemispheres in distribution, so a model that learned
the local response to observations and not *where* the observations usually are keeps its skill.

Moves (pure functions of one network table, as :func:`obscast.components.osse.networks.load_networks`
returns it; they never modify their input)
----------------------------------------------------------------------------------------------
:func:`rotate_longitude`
    Every position shifted east by ``degrees``, wrapped to [-180, 180). Applies to the SYNOP
    stations, TEMP sites, aircraft tracks and HIRS footprints (column ``longitude``) and to the
    AMV targets (column ``longitude_offset``, relative to each geostationary satellite's
    sub-satellite longitude: every satellite-wind position moves by the same amount, while the
    satellites of :data:`obscast.components.osse.amv.AMV_SATELLITES` stay where they are, so
    the targets move within their discs). The replayed satellite orbit moves with its footprints.
:func:`mirror_hemispheres`
    ``latitude -> -latitude`` (every kind, AMV targets included): the dense northern network
    moves south.
:func:`thin`
    Keeps ``round(fraction * n)`` of the ``n`` observing units, chosen at random with a fixed seed
    (:func:`numpy.random.default_rng`), in their original order. The unit is the station for SYNOP
    and TEMP (``station_id``), the flight for aircraft (``flight``; the reports without a flight
    number are one unit), the field of view for the satellite footprints and the target for AMVs
    (one row each). Flight ``k``'s replay time shift depends on its rank among the kept flights
    (:data:`obscast.components.osse.simulate.AIRCRAFT_SHIFT`), so kept flights may fly at another
    time of day than in the full network.

Station metadata travel with the station (a rotated SYNOP station keeps its ``altitude``; the
nature run has a flat surface, so the altitude is metadata only).

Probes (:data:`PROBES`)
-----------------------
``rotate90``, ``rotate180``: :func:`rotate_longitude` by 90 and 180 degrees; ``mirror``:
:func:`mirror_hemispheres`; ``thin50``, ``thin10``: :func:`thin` to 50 % and 10 % with seed
:data:`THIN_SEED`. :func:`move_networks` applies one to every network of a dict.

Re-simulation
-------------
:func:`resimulate_tables` samples a period of the nature run at a (moved) network with the
operators and error model of :func:`obscast.components.osse.simulate.simulate_observations`
and QCs the rows with :func:`obscast.components.obs.qc.apply_qc`, giving the accepted rows the
ingest stage would store in ``obs/<source>.zarr``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from obscast.components.obs.qc import apply_qc
from obscast.components.osse.errors import ErrorModel
from obscast.components.osse.simulate import footprint_stride, simulate_observations

__all__ = [
    "PROBES",
    "PROBE_NAMES",
    "THIN_SEED",
    "Probe",
    "mirror_hemispheres",
    "move_networks",
    "resimulate_tables",
    "rotate_longitude",
    "thin",
    "unit_ids",
]

#: Seed of the random choice of the thinning probes.
THIN_SEED = 20260101

#: Columns that identify an observing unit (station, site, flight); tables without one are
#: thinned by row (satellite fields of view, AMV targets).
_ID_COLUMNS = ("station_id", "flight")


def _longitude_column(network: pd.DataFrame) -> str:
    for column in ("longitude", "longitude_offset"):
        if column in network.columns:
            return column
    raise ValueError(f"network table has no 'longitude' or 'longitude_offset' column (has {list(network.columns)})")


def _wrap(lon: np.ndarray) -> np.ndarray:
    """Longitudes in [-180, 180) degrees."""
    out = np.mod(lon + 180.0, 360.0) - 180.0
    return np.where(out >= 180.0, out - 360.0, out) + 0.0


def rotate_longitude(network_df: pd.DataFrame, degrees: float) -> pd.DataFrame:
    """The network shifted east by ``degrees`` of longitude.

    Parameters
    ----------
    network_df : pandas.DataFrame
        One network of :func:`obscast.components.osse.networks.load_networks` (n rows), with a
        ``longitude`` [degree east] column, or the AMV targets with ``longitude_offset``
        [degree, relative to the sub-satellite point].
    degrees : float
        Eastward shift [degree]; any real value (negative: westward).

    Returns
    -------
    pandas.DataFrame
        A copy, shape (n, k), the longitude column ``mod(lon + degrees + 180, 360) - 180``
        (in [-180, 180)); every other column unchanged.

    Raises
    ------
    ValueError
        The table has no longitude column, or ``degrees`` is not finite.
    """
    if not np.isfinite(degrees):
        raise ValueError(f"rotation angle must be finite, got {degrees!r}")
    column = _longitude_column(network_df)
    out = network_df.copy()
    out[column] = _wrap(network_df[column].to_numpy(np.float64) + float(degrees))
    return out


def mirror_hemispheres(network_df: pd.DataFrame) -> pd.DataFrame:
    """The network mirrored at the equator: ``latitude -> -latitude``.

    Parameters
    ----------
    network_df : pandas.DataFrame
        One network table (n rows) with a ``latitude`` column [degree north].

    Returns
    -------
    pandas.DataFrame
        A copy, shape (n, k), with ``latitude`` negated (0 stays +0); the rest unchanged.

    Raises
    ------
    ValueError
        The table has no ``latitude`` column.
    """
    if "latitude" not in network_df.columns:
        raise ValueError(f"network table has no 'latitude' column (has {list(network_df.columns)})")
    out = network_df.copy()
    out["latitude"] = -network_df["latitude"].to_numpy(np.float64) + 0.0
    return out


def unit_ids(network_df: pd.DataFrame) -> np.ndarray:
    """The observing unit of each row: ``station_id`` or ``flight`` when the table has one, else the
    row number (a footprint or AMV target per row). Shape (n,)."""
    for column in _ID_COLUMNS:
        if column in network_df.columns:
            return network_df[column].to_numpy(dtype=object)
    return np.arange(len(network_df))


def thin(network_df: pd.DataFrame, fraction: float, seed: int = THIN_SEED) -> pd.DataFrame:
    """Keep a random share of the network's observing units (stations, sites, flights, footprints).

    Parameters
    ----------
    network_df : pandas.DataFrame
        One network table (n rows); the unit of each row is :func:`unit_ids`.
    fraction : float
        Share of the units kept, in (0, 1]: ``round(fraction * n_units)`` of them (at least one).
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed keeps the same units.

    Returns
    -------
    pandas.DataFrame
        The rows of the kept units, in their original order, index reset.

    Raises
    ------
    ValueError
        ``fraction`` outside (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"thinning fraction must be in (0, 1], got {fraction!r}")
    ids = unit_ids(network_df)
    units = pd.unique(ids)
    if len(units) == 0:
        return network_df.copy()
    n_keep = max(1, round(fraction * len(units)))
    chosen = np.random.default_rng(seed).choice(len(units), size=n_keep, replace=False)
    keep = pd.Index(units).get_indexer(ids)
    mask = np.isin(keep, chosen)
    return network_df[mask].reset_index(drop=True)


@dataclass(frozen=True)
class Probe:
    """A named network move.

    Attributes
    ----------
    name : str
        E.g. ``"rotate90"``.
    move : str
        ``"rotate"``, ``"mirror"`` or ``"thin"``.
    value : float
        Rotation [degree east] or kept fraction; unused for ``"mirror"``.
    """

    name: str
    move: str
    value: float = 0.0

    def apply(self, network_df: pd.DataFrame, seed: int = THIN_SEED) -> pd.DataFrame:
        """The moved copy of one network table (see :func:`rotate_longitude`, :func:`mirror_hemispheres`, :func:`thin`)."""
        if self.move == "rotate":
            return rotate_longitude(network_df, self.value)
        if self.move == "mirror":
            return mirror_hemispheres(network_df)
        if self.move == "thin":
            return thin(network_df, self.value, seed)
        raise ValueError(f"probe {self.name!r}: unknown move {self.move!r}")


#: The probes of ``verify.probes``, by name.
PROBES: dict[str, Probe] = {
    "rotate90": Probe("rotate90", "rotate", 90.0),
    "rotate180": Probe("rotate180", "rotate", 180.0),
    "mirror": Probe("mirror", "mirror"),
    "thin50": Probe("thin50", "thin", 0.5),
    "thin10": Probe("thin10", "thin", 0.1),
}
PROBE_NAMES: tuple[str, ...] = tuple(PROBES)


def move_networks(networks: Mapping[str, pd.DataFrame], probe: str | Probe | None, seed: int = THIN_SEED) -> dict[str, pd.DataFrame]:
    """Every network of ``networks`` moved by one probe (None: unmoved copies).

    Parameters
    ----------
    networks : mapping of str to pandas.DataFrame
        As :func:`obscast.components.osse.networks.load_networks` returns (``amv`` included when
        loaded).
    probe : str or Probe or None
        A name of :data:`PROBES`, a :class:`Probe`, or None.
    seed : int
        Thinning seed.

    Raises
    ------
    ValueError
        Unknown probe name.
    """
    if probe is None:
        return {k: v.copy() for k, v in networks.items()}
    if isinstance(probe, str):
        if probe not in PROBES:
            raise ValueError(f"unknown network probe {probe!r}; expected one of {PROBE_NAMES}")
        probe = PROBES[probe]
    return {k: probe.apply(v, seed) for k, v in networks.items()}


def resimulate_tables(
    nature: Any,
    networks: Mapping[str, pd.DataFrame],
    sources: Mapping[str, str],
    error_model: ErrorModel | None = None,
    start: Any = None,
    end: Any = None,
    *,
    satellite_stride: int | None = None,
    unmoved_satellite_footprints: int | None = None,
) -> dict[str, pd.DataFrame]:
    """Observation tables of a period simulated at a (moved) network, as the ingest stage stores them.

    The simulation is :func:`obscast.components.osse.simulate.simulate_observations` (same
    operators, error model and seeds; one generator per (seed, kind, nature time)), the QC
    :func:`obscast.components.obs.qc.apply_qc`, and the result its accepted rows: what
    ``ObsTable(store, "obs/<source>.zarr").read()`` gives after ``obscast simulate`` and
    ``obscast ingest`` for those times. The BUFR round trip of the simulate and ingest stages is
    skipped: values are not rounded to the BUFR packing precision
    (:data:`obscast.components.obs.bufr_writer.PACKING_PRECISION`, e.g. 0.01 K, 0.1 m s-1, 10 Pa),
    and the satellite-wind table keeps the design's metadata columns as the simulation made them.

    Parameters
    ----------
    nature : xarray.Dataset
        The nature run (``gridded/nature.zarr``, see :func:`simulate_observations`).
    networks : mapping of str to pandas.DataFrame
        Per kind, the (moved) network (:func:`move_networks`).
    sources : mapping of str to str
        Source name -> kind (``synop``, ``temp``, ``aircraft``, ``satellite``, ``amv``), e.g.
        ``{name: s.kind for name, s in config.sources.items()}``.
    error_model : ErrorModel, optional
        ``config.osse.error_model`` (default ``ErrorModel()``).
    start, end : time-like, optional
        Nature times simulated, ``[start, end]`` (see :func:`simulate_observations`).
    satellite_stride : int, optional
        Fields-of-view stride of the satellite replay (default: that of
        ``unmoved_satellite_footprints``, else of the given satellite network).
    unmoved_satellite_footprints : int, optional
        Footprints of the unmoved satellite network: its stride is kept, so a thinned network
        yields fewer satellite rows (not the same number from a finer stride).

    Returns
    -------
    dict of str to pandas.DataFrame
        Source name -> accepted observation rows (reader columns of the kind plus ``qc``
        (uint8, 0)), sorted stably by time.

    Raises
    ------
    ValueError
        Unknown kind, or the period/nature run is unusable (see :func:`simulate_observations`).
    KeyError
        A source's network is missing from ``networks``.
    """
    kinds = tuple(dict.fromkeys(sources.values()))
    missing = [k for k in kinds if k not in networks]
    if missing:
        raise KeyError(f"networks lack {missing} (have {sorted(networks)}); load them with amv=True for satellite winds")
    if satellite_stride is None and unmoved_satellite_footprints is not None and "satellite" in kinds:
        satellite_stride = footprint_stride(unmoved_satellite_footprints, int(nature.sizes["level"]))
    sim = simulate_observations(nature, networks, error_model, start=start, end=end, kinds=kinds,
                                satellite_stride=satellite_stride)
    out = {}
    for name, kind in sources.items():
        accepted = apply_qc(sim[kind], kind, source=f"probe:{name}").accepted
        out[name] = accepted.reset_index(drop=True)
    return out
