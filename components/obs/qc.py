"""Gross quality control of observation tables.

:func:`apply_qc` splits an observation table (see
:mod:`obscast.components.obs.readers.bufr`) into accepted and rejected rows. The checks
are the *gross* checks of WMO-No. 305, *Guide on the Global Data-processing
System*, Chapter 6 (completeness, plausible position/time, gross limits,
duplicates); the limits come from :data:`obscast.components.obs.variables.VARIABLES`.
Softer checks (climatology, temporal/spatial consistency, background
departures) are not done here; they would set bits of the ``qc`` column.

Reason codes, tested in this order; the first failing check wins
-----------------------------------------------------------------
``bad_coordinates``
    ``time`` is NaT; ``latitude`` is NaN or ``|latitude| > 90``;
    ``longitude`` is NaN or outside ``[-180, 180)``. This covers impossible
    coordinates of real feeds: ``|longitude| > 360`` and decimal-shifted values
    (the readers leave them un-normalised, see
    :func:`obscast.components.obs.conversions.normalise_longitude`), and fill
    values used as coordinates (-999, 9999, ...: all outside those ranges).
``fill_value:<column>``
    A value of a coordinate (``pressure``, ``height``, ``surface_altitude``) or
    observed-variable column that is a fill value rather than a measurement:
    one of :data:`FILL_VALUES` (-9999, 99999, -32768, 65535, ...), ``|value| >=
    1e15`` (BUFR missing -1e100, netCDF default fill 9.97e36, 1e20), or a
    denormal number (``0 < |value| <`` the smallest normal float32,
    1.18e-38: bit patterns, not measurements). Columns in table order.
``all_missing``
    Every observed-variable column is NaN (e.g. SYNOP supplementary
    messages). Observed-variable columns are the float columns other than
    ``time, latitude, longitude, station_id, pressure, height,
    surface_altitude, channel, qc``.
``out_of_range:<column>``
    A value outside ``VARIABLES[...].valid_min .. valid_max`` (inclusive;
    NaN passes). Tested first for the coordinates ``pressure`` (limits of
    ``air_pressure``: 100..110000 Pa) and ``height`` (limits of ``altitude``:
    -500..20000 m), then ``surface_altitude`` (-500..9000 m), then the
    observed-variable columns in table order. Columns not in
    ``VARIABLES`` are not range-checked.
``physically_impossible:<column>``
    A value inside the gross limits that physics rules out:
    ``air_temperature`` or ``dew_point_temperature`` above 333.15 K (60 degC;
    the world record is 56.7 degC, WMO Weather & Climate Extremes Archive),
    or ``dew_point_temperature`` above ``air_temperature`` by more than
    :data:`DEW_POINT_TOLERANCE_K` (the dew point cannot exceed the temperature,
    WMO-No. 8, Vol. I, Ch. 4; the tolerance absorbs the 0.1 K rounding of
    reports).
``low_quality``
    Satellite winds (AMV): ``quality_indicator`` (percent confidence) below
    :data:`obscast.components.obs.readers.amv.MIN_QUALITY_INDICATOR` (80 %); NaN passes.
``station_moved``
    Fixed land stations (tables with a ``surface_altitude`` column, i.e. SYNOP)
    only: a report whose position is more than :data:`STATION_MOVE_KM` from
    its station's usual position, the most frequent position (rounded to
    0.01 degree; on a tie the first seen) of the station's reports that passed
    the checks above. Reports without a ``station_id`` are not checked.
``duplicate``, ``duplicate_conflict``
    Reports of the same *report key*: ``station_id``, ``time``, the vertical
    coordinate(s) (``pressure``, ``height``) and satellite ``channel``, those
    present (NaN equals NaN), plus ``latitude`` and ``longitude`` except for
    fixed land stations (a ``surface_altitude`` column and a non-empty
    ``station_id``: the identifier names the place; moving platforms and
    satellites report many positions at one time). Among the copies that passed every other check one
    is kept: the one with the most non-missing observed values, on a tie the
    first in input order. The others are ``duplicate`` when equal to the kept
    copy in every column (NaN equals NaN), ``duplicate_conflict`` when they
    differ (e.g. a corrected report, or a station reported twice at two
    positions).

Every input row gets exactly one outcome: ``counts`` adds up, reason by reason
plus ``accepted``, to ``total``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from obscast.components.obs.variables import VARIABLES

__all__ = [
    "COORDINATE_LIMITS",
    "DEW_POINT_TOLERANCE_K",
    "EXTRA_LIMITS",
    "FILL_MAGNITUDE",
    "FILL_VALUES",
    "MAX_TEMPERATURE_K",
    "NON_OBSERVED_COLUMNS",
    "REASONS",
    "STATION_MOVE_KM",
    "QCResult",
    "apply_qc",
    "observed_columns",
]

LOG = logging.getLogger(__name__)

#: Fixed reason codes (``fill_value:``, ``out_of_range:`` and ``physically_impossible:<column>``
#: codes are formed per column).
REASONS: tuple[str, ...] = ("bad_coordinates", "all_missing", "station_moved", "duplicate", "duplicate_conflict")

#: Values that are fill markers, not measurements, in any unit (see the module docstring).
FILL_VALUES: tuple[float, ...] = (-9999.0, -99999.0, -999999.0, 99999.0, 999999.0, -32767.0, -32768.0, 65535.0,
                                  2147483647.0, -2147483648.0)
#: Smallest magnitude that is a fill value whatever the unit.
FILL_MAGNITUDE: float = 1e15
#: Upper limit of air and dew-point temperature [K]: 60 degC.
MAX_TEMPERATURE_K: float = 333.15
#: How far the dew point may exceed the air temperature [K] before it is impossible (rounding).
DEW_POINT_TOLERANCE_K: float = 0.2
#: Distance [km] from its usual position beyond which a fixed station's report is ``station_moved``.
STATION_MOVE_KM: float = 10.0
#: Gross limits of columns that :data:`VARIABLES` does not list (visibility: WMO-No. 8, Vol. I, Ch. 9).
EXTRA_LIMITS: dict[str, tuple[float, float]] = {"visibility_in_air": (0.0, 100000.0)}

_EARTH_RADIUS_KM = 6371.0
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)

#: Columns that are never observed variables.
NON_OBSERVED_COLUMNS: frozenset[str] = frozenset(
    {"time", "latitude", "longitude", "station_id", "pressure", "height", "surface_altitude", "channel", "qc",
     # AMV metadata (obscast.components.obs.readers.amv.AMV_METADATA_COLUMNS)
     "satellite_channel_centre_frequency", "wind_computation_method", "quality_indicator"}
)

#: Range-checked non-observed columns -> the VARIABLES entry giving the limits.
COORDINATE_LIMITS: dict[str, str] = {
    "pressure": "air_pressure",
    "height": "altitude",
    "surface_altitude": "surface_altitude",
}

_REQUIRED = ("time", "latitude", "longitude", "station_id")


@dataclass
class QCResult:
    """Outcome of :func:`apply_qc`.

    Attributes
    ----------
    accepted : pandas.DataFrame
        Rows that passed, shape (n_accepted, n_columns + 1): the input
        columns plus ``qc`` (uint8). ``qc`` is a bit-flag column reserved for
        soft flags set by later checks; 0 means the row passed all checks
        (gross QC only ever writes 0). Input index labels and order kept.
    rejected : pandas.DataFrame
        The other rows, shape (n_rejected, n_columns + 1): all input
        columns unchanged plus ``reason`` (object dtype, a reason code of
        the module docstring). Input index labels and order kept.
    counts : dict of str to int
        Rows per reason code (those of :data:`REASONS` always present, the
        per-column codes ``fill_value:``, ``out_of_range:`` and
        ``physically_impossible:<column>`` when they occur), plus
        ``accepted`` and ``total``; the reason counts and
        ``accepted`` add up to ``total``.
    kind : str
        The ``kind`` given to :func:`apply_qc`.
    source : str or None
        The ``source`` given to :func:`apply_qc`.
    """

    accepted: pd.DataFrame
    rejected: pd.DataFrame
    counts: dict[str, int]
    kind: str = ""
    source: str | None = None


def observed_columns(table: pd.DataFrame) -> list[str]:
    """Names of the observed-variable columns of an observation table.

    Parameters
    ----------
    table : pandas.DataFrame
        Observation table.

    Returns
    -------
    list of str
        Float columns not in :data:`NON_OBSERVED_COLUMNS`, in table order.
    """
    return [
        c for c in table.columns
        if c not in NON_OBSERVED_COLUMNS and pd.api.types.is_float_dtype(table[c].dtype)
    ]


def _values(table: pd.DataFrame, column: str) -> np.ndarray:
    return table[column].to_numpy(dtype=np.float64, na_value=np.nan)


def _moved(station: np.ndarray, lat: np.ndarray, lon: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rows of ``mask`` farther than :data:`STATION_MOVE_KM` from their station's usual position."""
    idx = np.flatnonzero(mask)
    frame = pd.DataFrame({"station": station[idx], "lat": np.round(lat[idx], 2), "lon": np.round(lon[idx], 2)})
    counts = frame.groupby(["station", "lat", "lon"], sort=False).size().rename("n").reset_index()
    usual = counts.sort_values("n", ascending=False, kind="stable").drop_duplicates("station")  # first seen on ties
    ref = frame[["station"]].merge(usual, on="station", how="left")
    phi1, phi2 = np.deg2rad(lat[idx]), np.deg2rad(ref["lat"].to_numpy(np.float64))
    dlam = np.deg2rad(lon[idx] - ref["lon"].to_numpy(np.float64))
    # great-circle distance (spherical law of cosines, clipped for rounding)
    cos_d = np.clip(np.sin(phi1) * np.sin(phi2) + np.cos(phi1) * np.cos(phi2) * np.cos(dlam), -1.0, 1.0)
    out = np.zeros(len(mask), dtype=bool)
    out[idx] = _EARTH_RADIUS_KM * np.arccos(cos_d) > STATION_MOVE_KM
    return out


def _duplicates(table: pd.DataFrame, observed: list[str], fixed: np.ndarray, pending: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(exact, conflict)`` masks of the non-kept copies among the ``pending`` rows (module docstring)."""
    n = len(table)
    idx = np.flatnonzero(pending)
    sub = table.iloc[idx]
    keys = ["station_id", "time"] + [c for c in ("pressure", "height", "channel") if c in table.columns]
    key_frame = sub[keys].copy()
    key_frame["_lat"] = np.where(fixed[idx], np.nan, sub["latitude"].to_numpy(np.float64))
    key_frame["_lon"] = np.where(fixed[idx], np.nan, sub["longitude"].to_numpy(np.float64))
    group = key_frame.groupby(list(key_frame.columns), sort=False, dropna=False).ngroup().to_numpy()
    exact, conflict = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    sizes = np.bincount(group)
    if (sizes < 2).all():
        return exact, conflict
    filled = (np.column_stack([~np.isnan(_values(sub, c)) for c in observed]).sum(axis=1)
              if observed else np.zeros(len(idx), dtype=np.int64))
    # kept copy per group: most observed values, then the first in input order
    order = np.lexsort((np.arange(len(idx)), -filled, group))
    kept_pos = order[np.r_[True, group[order][1:] != group[order][:-1]]]
    kept = np.zeros(len(idx), dtype=bool)
    kept[kept_pos] = True
    hashes = pd.util.hash_pandas_object(sub, index=False).to_numpy()
    kept_hash = np.empty(sizes.size, dtype=hashes.dtype)
    kept_hash[group[kept_pos]] = hashes[kept_pos]
    same = hashes == kept_hash[group]
    exact[idx] = ~kept & same
    conflict[idx] = ~kept & ~same
    return exact, conflict


def apply_qc(table: pd.DataFrame, kind: str, source: str | None = None) -> QCResult:
    """Split an observation table into accepted and rejected rows.

    Parameters
    ----------
    table : pandas.DataFrame
        Observation table of shape (n, k) as returned by the readers of
        :mod:`obscast.components.obs.readers.bufr`; needs at least the columns ``time``,
        ``latitude``, ``longitude`` and ``station_id``. Not modified.
    kind : str
        Observation kind (``"synop"``, ``"temp"``, ``"aircraft"``, ...),
        recorded in the result and the log. The checks themselves depend
        only on the columns present, so every kind gets the same rules.
    source : str, optional
        Where the table came from (e.g. the file name), for the log and the
        result.

    Returns
    -------
    QCResult
        ``len(accepted) + len(rejected) == len(table)``; every input row is in
        exactly one of them (see module docstring for the reason codes and
        their order).

    Raises
    ------
    ValueError
        If a required column is missing.
    """
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"observation table lacks column(s) {missing}")
    n = len(table)
    reason = np.full(n, None, dtype=object)
    pending = np.ones(n, dtype=bool)  # rows without a reason yet

    def flag(mask: np.ndarray, code: str) -> None:
        hit = mask & pending
        reason[hit] = code
        pending[hit] = False

    # 1. position and time
    time = pd.to_datetime(table["time"]).to_numpy()
    lat = _values(table, "latitude")
    lon = _values(table, "longitude")
    with np.errstate(invalid="ignore"):
        bad = np.isnat(time) | ~(np.abs(lat) <= 90.0) | ~((lon >= -180.0) & (lon < 180.0))
    flag(bad, "bad_coordinates")

    # 1b. fill values and denormals in coordinates and observed variables
    observed = observed_columns(table)
    for column in [c for c in COORDINATE_LIMITS if c in table.columns] + observed:
        v = np.abs(_values(table, column))
        with np.errstate(invalid="ignore"):
            fill = np.isin(-v, FILL_VALUES) | np.isin(v, FILL_VALUES) | (v >= FILL_MAGNITUDE) | ((v > 0) & (v < _FLOAT32_TINY))
        flag(fill, f"fill_value:{column}")

    # 2. completeness
    if observed:
        all_nan = np.all(np.isnan(np.column_stack([_values(table, c) for c in observed])), axis=1)
    else:
        all_nan = np.ones(n, dtype=bool)
    flag(all_nan, "all_missing")

    # 3. gross limits: coordinates first, then observed variables in order
    checked = [c for c in COORDINATE_LIMITS if c in table.columns]
    checked += [c for c in observed if c in VARIABLES or c in EXTRA_LIMITS]
    for column in checked:
        if column in EXTRA_LIMITS:
            low, high = EXTRA_LIMITS[column]
        else:
            limits = VARIABLES[COORDINATE_LIMITS.get(column, column)]
            low, high = limits.valid_min, limits.valid_max
        v = _values(table, column)
        with np.errstate(invalid="ignore"):
            flag((v < low) | (v > high), f"out_of_range:{column}")

    # 3a. physically impossible values inside the gross limits
    temperature = _values(table, "air_temperature") if "air_temperature" in table.columns else np.full(n, np.nan)
    with np.errstate(invalid="ignore"):
        flag(temperature > MAX_TEMPERATURE_K, "physically_impossible:air_temperature")
        if "dew_point_temperature" in table.columns:
            dew = _values(table, "dew_point_temperature")
            flag((dew > MAX_TEMPERATURE_K) | (dew > temperature + DEW_POINT_TOLERANCE_K),
                 "physically_impossible:dew_point_temperature")

    # 3b. satellite winds: quality indicator below the threshold (NaN passes)
    if "quality_indicator" in table.columns:
        from obscast.components.obs.readers.amv import MIN_QUALITY_INDICATOR

        with np.errstate(invalid="ignore"):
            flag(_values(table, "quality_indicator") < MIN_QUALITY_INDICATOR, "low_quality")

    station = table["station_id"].astype(str).str.strip().to_numpy(dtype=object)
    fixed = ("surface_altitude" in table.columns) & (station != "")
    # 3c. fixed stations reported away from their usual position
    if fixed.any() and pending.any():
        flag(_moved(station, lat, lon, fixed & pending), "station_moved")

    # 4. duplicates among the rows still accepted
    if pending.any():
        exact, conflict = _duplicates(table, observed, fixed, pending)
        flag(exact, "duplicate")
        flag(conflict, "duplicate_conflict")

    ok = pending
    accepted = table.loc[ok].copy()
    if "qc" in accepted.columns:
        accepted["qc"] = accepted["qc"].to_numpy(dtype=np.uint8)
    else:
        accepted["qc"] = np.zeros(len(accepted), dtype=np.uint8)
    rejected = table.loc[~ok].copy()
    rejected["reason"] = pd.Series(reason[~ok], index=rejected.index, dtype=object)

    counts = {code: 0 for code in REASONS}
    codes, numbers = np.unique(reason[~ok].astype(str), return_counts=True) if (~ok).any() else ([], [])
    counts.update({str(c): int(k) for c, k in zip(codes, numbers)})
    counts["accepted"] = int(ok.sum())
    counts["total"] = n
    LOG.info("qc %s %s: %d of %d accepted; %s", kind, source or "", counts["accepted"], n,
             {k: v for k, v in counts.items() if k not in ("accepted", "total") and v})
    return QCResult(accepted=accepted, rejected=rejected, counts=counts, kind=kind, source=source)
