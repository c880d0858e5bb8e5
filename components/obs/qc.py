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
    ``longitude`` is NaN or outside ``[-180, 180)``.
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
``duplicate``
    Same ``station_id``, ``time``, ``latitude``, ``longitude``, vertical
    coordinate(s) (``pressure``, ``height``) and satellite ``channel``, those
    present (NaN equals NaN), as an earlier row that passed every other
    check; the first is kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from obscast.components.obs.variables import VARIABLES

__all__ = [
    "COORDINATE_LIMITS",
    "NON_OBSERVED_COLUMNS",
    "QCResult",
    "REASONS",
    "apply_qc",
    "observed_columns",
]

LOG = logging.getLogger(__name__)

#: Fixed reason codes (``out_of_range:<column>`` codes are formed per column).
REASONS: tuple[str, ...] = ("bad_coordinates", "all_missing", "duplicate")

#: Columns that are never observed variables.
NON_OBSERVED_COLUMNS: frozenset[str] = frozenset(
    {"time", "latitude", "longitude", "station_id", "pressure", "height", "surface_altitude", "channel", "qc"}
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
        Rows per reason code (``bad_coordinates``, ``all_missing`` and
        ``duplicate`` always present, ``out_of_range:<column>`` when it
        occurs), plus ``accepted`` and ``total``; the reason counts and
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

    # 2. completeness
    observed = observed_columns(table)
    if observed:
        all_nan = np.all(np.isnan(np.column_stack([_values(table, c) for c in observed])), axis=1)
    else:
        all_nan = np.ones(n, dtype=bool)
    flag(all_nan, "all_missing")

    # 3. gross limits: coordinates first, then observed variables in order
    checked = [c for c in COORDINATE_LIMITS if c in table.columns]
    checked += [c for c in observed if c in VARIABLES]
    for column in checked:
        limits = VARIABLES[COORDINATE_LIMITS.get(column, column)]
        v = _values(table, column)
        with np.errstate(invalid="ignore"):
            flag((v < limits.valid_min) | (v > limits.valid_max), f"out_of_range:{column}")

    # 4. duplicates among the rows still accepted
    keys = list(_REQUIRED) + [c for c in ("pressure", "height", "channel") if c in table.columns]
    dup = np.zeros(n, dtype=bool)
    if pending.any():
        dup[pending] = table.loc[pending, keys].duplicated(keep="first").to_numpy()
    flag(dup, "duplicate")

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
