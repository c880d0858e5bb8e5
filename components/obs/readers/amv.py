"""Satellite winds: atmospheric motion vectors (AMV) from BUFR to an observation table.

An AMV is a wind derived by tracking clouds or water-vapour features in successive images of a
geostationary (or polar) imager, assigned to the pressure of the tracked feature (the cloud top
for cloud-motion winds). Centres send them as BUFR category 005 (single level upper-air data
from satellites), e.g. EUMETSAT's Meteosat winds (ECMWF subtype 87, template 3 10 195 followed
by quality-information sections: operator 2 22 000 with percent confidence 0 33 007 and other
quality blocks, one per generating application) and NOAA/JMA winds (template 3 10 077).

Ranked keys
-----------
Within one subset an AMV message repeats the same elements many times: the wind
(``windDirection``, ``windSpeed``), its ``pressure`` and the time come first; later occurrences
are the time-period blocks of the intermediate vectors, first-guess (model background) winds and
the replicated height-assignment blocks. The *first* occurrence is the observation, so the
reader asks eccodes for the ranked keys ``#1#<element>`` of :data:`AMV_KEYS` only and never for
an unranked key. The quality indicator is the percent confidence (0 33 007) attached to the
wind speed by the first quality-information section (``#1#windSpeed->percentConfidence``; for
EUMETSAT the first generating application), or a plain ``#1#percentConfidence`` element in
layouts without the 2 22 000 operator (the OSSE's simulated files).

Missing values (the all-ones bit pattern, ``CODES_MISSING_DOUBLE`` / ``CODES_MISSING_LONG`` in
eccodes) become NaN, or ``-1`` in the integer column ``wind_computation_method``.

Observation table (:data:`AMV_COLUMNS`)
---------------------------------------
==================================  ==============  =======  =======================================
column                              dtype           units    BUFR (first occurrence)
==================================  ==============  =======  =======================================
time                                datetime64[ns]  UTC      year .. second (0 04 001-0 04 006)
latitude                            float64         degree   0 05 001 / 0 05 002
longitude                           float64         degree   0 06 001 / 0 06 002, in [-180, 180)
station_id                          object (str)             satellite name of 0 01 007
                                                             (:data:`AMV_SATELLITE_NAMES`, else the
                                                             decimal code), ``""`` when missing
pressure                            float32         Pa       0 07 004: pressure of the wind (the
                                                             height assignment, e.g. cloud top)
satellite_channel_centre_frequency  float64         Hz       0 02 153 (the imager channel tracked)
wind_computation_method             int64                    code table 0 02 023 (1 infrared cloud
                                                             motion, 2 visible, 3 water vapour
                                                             cloudy, 4 combination, 5 water vapour
                                                             clear air, 6 ozone, 7 water vapour
                                                             unspecified); -1 when missing
quality_indicator                   float32         %        0 33 007 of the first quality section
wind_speed                          float32         m s-1    0 11 002
wind_from_direction                 float32         degree   0 11 001
eastward_wind, northward_wind       float32         m s-1    derived from speed and direction
==================================  ==============  =======  =======================================

One row per subset, sorted stably by time. Counts equal a direct eccodes read of the file
(number of subsets of all messages): the reader keeps every subset; quality control
(:func:`obscast.components.obs.qc.apply_qc`) decides what is accepted.
"""

from __future__ import annotations

import os
from typing import Any

import eccodes
import numpy as np
import pandas as pd

from obscast.components.errors import InputError
from obscast.components.obs.conversions import _DEGREE_DECIMALS, normalise_longitude, wind_components
from obscast.components.obs.readers.bufr import Window, normalise_window
from obscast.components.obs.readers.bufr_fast import _DECODE_ERRORS, _check_file, _decode_error, bufr_messages

__all__ = [
    "AMV_COLUMNS",
    "AMV_KEYS",
    "AMV_METADATA_COLUMNS",
    "AMV_SATELLITE_NAMES",
    "MIN_QUALITY_INDICATOR",
    "WIND_COMPUTATION_METHODS",
    "read_amv",
]

#: Output columns of :func:`read_amv`, in order (see the module docstring).
AMV_COLUMNS: tuple[str, ...] = (
    "time", "latitude", "longitude", "station_id", "pressure",
    "satellite_channel_centre_frequency", "wind_computation_method", "quality_indicator",
    "wind_speed", "wind_from_direction", "eastward_wind", "northward_wind",
)

#: Columns that describe an AMV but are not observed values (never model inputs, never
#: counted as observed by QC).
AMV_METADATA_COLUMNS: tuple[str, ...] = (
    "satellite_channel_centre_frequency", "wind_computation_method", "quality_indicator",
)

#: Element names (eccodes) read at rank 1, per output quantity; the quality indicator tries
#: the attribute of the first quality section, then a plain element.
AMV_KEYS: dict[str, tuple[str, ...]] = {
    "year": ("#1#year",),
    "month": ("#1#month",),
    "day": ("#1#day",),
    "hour": ("#1#hour",),
    "minute": ("#1#minute",),
    "second": ("#1#second",),
    "latitude": ("#1#latitude",),
    "longitude": ("#1#longitude",),
    "satellite": ("#1#satelliteIdentifier",),
    "pressure": ("#1#pressure",),
    "wind_from_direction": ("#1#windDirection",),
    "wind_speed": ("#1#windSpeed",),
    "satellite_channel_centre_frequency": ("#1#satelliteChannelCentreFrequency",),
    "wind_computation_method": ("#1#satelliteDerivedWindComputationMethod",),
    "quality_indicator": ("#1#windSpeed->percentConfidence", "#1#percentConfidence"),
}

#: Keys every AMV message must have (the others are NaN when absent).
_REQUIRED = ("year", "month", "day", "hour", "latitude", "longitude", "satellite", "pressure", "wind_from_direction", "wind_speed")

#: Code table 0 02 023, satellite derived wind computation method (WMO-No. 306, Vol. I.2).
WIND_COMPUTATION_METHODS: dict[int, str] = {
    1: "cloud motion, infrared channel",
    2: "cloud motion, visible channel",
    3: "cloud motion, water vapour channel",
    4: "motion in a combination of spectral channels",
    5: "motion, water vapour channel in clear air",
    6: "motion, ozone channel",
    7: "motion, water vapour channel (cloud or clear air not specified)",
}

#: Geostationary imagers of Common Code Table C-5 (0 01 007) -> ``station_id``.
AMV_SATELLITE_NAMES: dict[int, str] = {
    55: "meteosat-8",
    56: "meteosat-9",
    57: "meteosat-10",
    70: "meteosat-11",
    71: "meteosat-12",
    173: "himawari-8",
    174: "himawari-9",
    270: "goes-16",
    271: "goes-17",
    272: "goes-18",
}

#: Quality indicator below which QC quarantines an AMV (reason ``low_quality``), in percent.
#: The EUMETSAT quality indicator (Holmlund 1998, "The utilization of statistical properties of
#: satellite-derived atmospheric motion vectors to derive quality indicators", Weather and
#: Forecasting 13, 1093-1104) is screened at 80 % or above by the centres that assimilate
#: Meteosat winds; 80 is the loosest of those thresholds.
MIN_QUALITY_INDICATOR: float = 80.0


def _get(handle: Any, keys: tuple[str, ...], n: int) -> np.ndarray | None:
    """Values of the first present key, shape (n,) float64 with NaN for missing; None if absent."""
    for key in keys:
        try:
            values = np.asarray(eccodes.codes_get_double_array(handle, key), dtype=np.float64)
        except eccodes.KeyValueNotFoundError:
            continue
        values = values.copy()
        values[(values == eccodes.CODES_MISSING_DOUBLE) | (values == eccodes.CODES_MISSING_LONG)] = np.nan
        if values.size == 1:  # compressed element with one value for every subset
            values = np.repeat(values, n)
        if values.size != n:
            raise ValueError(f"{key} has {values.size} values for {n} subsets")
        return values
    return None


def _one_subset_handles(handle: Any, n: int) -> list[Any]:
    """Single-subset clones of an uncompressed multi-subset message (eccodes subset extraction)."""
    out = []
    eccodes.codes_set(handle, "unpack", 1)
    for k in range(1, n + 1):
        eccodes.codes_set(handle, "extractSubset", k)
        eccodes.codes_set(handle, "doExtractSubsets", 1)
        out.append(eccodes.codes_clone(handle))
    return out


def _message(path: str | os.PathLike[str], handle: Any, index: int) -> dict[str, np.ndarray]:
    """Columns of one message (one value per subset)."""
    n = int(eccodes.codes_get(handle, "numberOfSubsets"))
    if n > 1 and int(eccodes.codes_get(handle, "compressedData")) != 1:
        parts = []
        for sub in _one_subset_handles(handle, n):
            try:
                eccodes.codes_set(sub, "unpack", 1)
                parts.append(_message(path, sub, index))
            finally:
                eccodes.codes_release(sub)
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    eccodes.codes_set(handle, "unpack", 1)
    out: dict[str, np.ndarray] = {}
    for name, keys in AMV_KEYS.items():
        values = _get(handle, keys, n)
        if values is None:
            if name in _REQUIRED:
                raise InputError(
                    path, keys[0], "an AMV message (BUFR category 005) with the wind, its pressure, "
                    "position and time", found=f"no such key in message {index + 1}",
                )
            values = np.full(n, np.nan)
        out[name] = values
    return out


def _times(cols: dict[str, np.ndarray]) -> np.ndarray:
    """datetime64[ns] from year..second; NaT where a part is missing or invalid (second: 0)."""
    second = np.nan_to_num(cols["second"], nan=0.0)
    frame = pd.DataFrame({k: cols[k] for k in ("year", "month", "day", "hour", "minute")})
    frame["minute"] = frame["minute"].fillna(0.0)
    ok = frame.notna().all(axis=1).to_numpy()
    out = np.full(len(frame), np.datetime64("NaT"), dtype="datetime64[ns]")
    if ok.any():
        whole = np.floor(second[ok])
        parts = frame[ok].astype(np.int64).assign(second=whole.astype(np.int64))
        ts = pd.to_datetime(parts, errors="coerce") + pd.to_timedelta(np.round((second[ok] - whole) * 1e6), unit="us")
        out[ok] = ts.to_numpy(dtype="datetime64[ns]")
    return out


def _satellite_names(codes: np.ndarray) -> np.ndarray:
    names = {}
    out = np.empty(len(codes), dtype=object)
    for i, c in enumerate(codes):
        if np.isnan(c):
            out[i] = ""
            continue
        code = int(c)
        if code not in names:
            names[code] = AMV_SATELLITE_NAMES.get(code, str(code))
        out[i] = names[code]
    return out


def read_amv(path: str | os.PathLike[str], window: Window = None, *, engine: str = "auto") -> pd.DataFrame:
    """Read atmospheric motion vectors (satellite winds) from a BUFR file.

    Parameters
    ----------
    path : str or os.PathLike
        BUFR file of AMV messages (category 005), compressed or not; every message must carry
        the wind (speed and direction), its pressure, position and time.
    window : None or (start, end), optional
        Keep only rows with ``start < time <= end`` (UTC), see
        :func:`obscast.components.obs.readers.bufr.normalise_window`.
    engine : {"auto", "eccodes"}, optional
        Both decode with eccodes' ranked keys (pdbufr does not select by rank).

    Returns
    -------
    pandas.DataFrame
        Observation table of shape (n_subsets, 12), columns :data:`AMV_COLUMNS` (see the
        module docstring for units and sources), one row per subset, stably sorted by time,
        ``RangeIndex``. ``eastward_wind``/``northward_wind`` from speed and direction
        (:func:`obscast.components.obs.conversions.wind_components`).

    Raises
    ------
    InputError
        File missing; truncated or corrupt BUFR (field ``'BUFR message'``); no message in the
        file; a message without one of the wind, pressure, position or date keys (field = the
        ranked key, e.g. ``'#1#windSpeed'``; a radiosonde file lacks ``#1#satelliteIdentifier``).
    ValueError
        Invalid ``window``, or ``engine`` not ``"auto"``/``"eccodes"``.
    """
    if engine not in ("auto", "eccodes"):
        raise ValueError(f"engine must be 'auto' or 'eccodes' for AMV files, got {engine!r}")
    bounds = normalise_window(window)
    _check_file(path)
    parts: list[dict[str, np.ndarray]] = []
    try:
        for handle in bufr_messages(path):
            parts.append(_message(path, handle, len(parts)))
    except InputError:
        raise
    except _DECODE_ERRORS as exc:
        raise _decode_error(path, exc) from exc
    if not parts:
        raise InputError(path, "BUFR message", "at least one AMV BUFR message", found="no decodable message")
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    speed = cols["wind_speed"].astype(np.float32)
    direction = cols["wind_from_direction"].astype(np.float32)
    u, v = wind_components(speed, direction)
    method = cols["wind_computation_method"]
    table = pd.DataFrame({
        "time": _times(cols),
        "latitude": np.round(cols["latitude"], _DEGREE_DECIMALS),
        "longitude": normalise_longitude(np.round(cols["longitude"], _DEGREE_DECIMALS)),
        "station_id": _satellite_names(cols["satellite"]),
        "pressure": cols["pressure"].astype(np.float32),
        "satellite_channel_centre_frequency": cols["satellite_channel_centre_frequency"],
        "wind_computation_method": np.where(np.isnan(method), -1, np.nan_to_num(method)).astype(np.int64),
        "quality_indicator": cols["quality_indicator"].astype(np.float32),
        "wind_speed": speed,
        "wind_from_direction": direction,
        "eastward_wind": (np.asarray(u) + 0.0).astype(np.float32),
        "northward_wind": (np.asarray(v) + 0.0).astype(np.float32),
    })
    table["station_id"] = table["station_id"].astype(object)
    if bounds is not None:
        t = table["time"].to_numpy()
        table = table[(t > bounds[0]) & (t <= bounds[1])]
    return table.sort_values("time", kind="stable").reset_index(drop=True)
