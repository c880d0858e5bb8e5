"""Qualifier-aware BUFR decoding of SYNOP, TEMP and aircraft reports (:func:`read_qualified`).

Split from :mod:`obscast.components.obs.readers.bufr_fast` (the array path for compressed
messages, whose decoding-error helpers and time assembly it shares); see the module docstring
of :mod:`obscast.components.obs.readers.bufr` for how the readers choose between them.
"""

from __future__ import annotations

import os
from typing import Any

import eccodes
import numpy as np
import pandas as pd

from obscast.components.obs.readers.bufr_fast import (
    _DECODE_ERRORS,
    _TIME_ELEMENTS,
    _datetimes,
    _decode_error,
    _Unsupported,
    bufr_messages,
)

# ---------------------------------------------------------------------------------------------
# Qualifier-aware decoding (SYNOP, TEMP, aircraft)
# ---------------------------------------------------------------------------------------------
#
# WMO templates repeat an element within a subset under *qualifiers* that precede it: 0 07 032
# heightOfSensorAboveLocalGroundOrDeckOfMarinePlatform (2 m air temperature, then 5 cm ground
# temperature; wind at the anemometer's height) and 0 04 024/0 04 025 timePeriod (10-minute mean
# wind, then gusts over 10 min and 6 h). The first occurrence of ``airTemperature`` is not always
# the 2 m temperature (DWD national 10-minute reports, template 307086 additions). The decoder
# walks each subset's data keys in order, keeps the qualifiers in effect and, per output column,
# keeps the first non-missing value of the best-ranked candidate (see _Select and _rank). TEMP
# rows are levels: every occurrence of ``pressure`` starts one.
#
# Speed: subsets with the same sequence of wanted keys (same template and replications: most
# messages of a file) are walked together, vectorised over subsets; compressed messages are
# fetched with one array call per key occurrence.

_SENSOR_HEIGHT = "heightOfSensorAboveLocalGroundOrDeckOfMarinePlatform"
_TIME_PERIOD = "timePeriod"

#: Sensor heights [m] accepted for screen-level (2 m) temperature and dew point: WMO-No. 8,
#: Vol. I, Ch. 2 (1.25 to 2 m), widened to 1..3 m for stations that report e.g. 2.3 m.
SCREEN_HEIGHT_M: tuple[float, float] = (1.0, 3.0)
#: The standard averaging period of the surface wind: 0 04 025 timePeriod = -10 min (WMO-No. 8,
#: Vol. I, Ch. 5: 10-minute mean; sequence 3 02 042 of templates 307080/307086/307096).
WIND_PERIOD_MIN: float = -10.0

_MISSING_LONG = float(eccodes.CODES_MISSING_LONG)
_STRINGS = frozenset({"aircraftFlightNumber", "aircraftRegistrationNumberOrOtherIdentification"})


class _Select:
    """One output column: candidates ``(element, rule)`` in order of preference.

    Rules: ``"any"`` accepts every occurrence; ``"screen"`` an occurrence under a sensor height
    in :data:`SCREEN_HEIGHT_M` (rank 0) or under a sensor height reported missing (rank 1), not
    one under another height (5 cm ground temperature) or under no sensor-height qualifier at
    all (not a surface-station group); ``"wind"`` likewise with the time period
    :data:`WIND_PERIOD_MIN` (rank 0) or a time period reported missing (rank 1). The
    kept value is the first non-missing one of the best (candidate, rank). ``level``: one value
    per TEMP level (else per report); ``prefix``: the element precedes its level's ``pressure``.
    """

    __slots__ = ("candidates", "column", "level", "prefix")

    def __init__(self, column: str, *candidates: tuple[str, str], level: bool = False, prefix: bool = False):
        self.column, self.candidates = column, candidates or ((column, "any"),)
        self.level, self.prefix = level, prefix


def _plain(*elements: str, level: bool = False) -> list[_Select]:
    return [_Select(e, level=level) for e in elements]


_TIME_AND_PLACE = _plain(*_TIME_ELEMENTS, "latitude", "longitude")

#: Output columns per kind, named like pdbufr's keys so that the frame reads like pdbufr's.
SELECTIONS: dict[str, list[_Select]] = {
    "synop": _plain("blockNumber", "stationNumber") + _TIME_AND_PLACE + _plain(
        "heightOfStationGroundAboveMeanSeaLevel", "heightOfStation",
        "pressureReducedToMeanSeaLevel", "nonCoordinatePressure") + [
        _Select("airTemperatureAt2M", ("airTemperatureAt2M", "any"), ("airTemperature", "screen")),
        _Select("dewpointTemperatureAt2M", ("dewpointTemperatureAt2M", "any"), ("dewpointTemperature", "screen")),
        _Select("windSpeedAt10M", ("windSpeedAt10M", "any"), ("windSpeed", "wind")),
        _Select("windDirectionAt10M", ("windDirectionAt10M", "any"), ("windDirection", "wind")),
    ],
    "temp": _plain("blockNumber", "stationNumber") + _TIME_AND_PLACE + [
        _Select("pressure", level=True),
        # sequence 3 03 054 (309052/309057): 0 04 086 long time period [s] precedes the pressure
        _Select("timePeriod", level=True, prefix=True),
        *_plain("latitudeDisplacement", "longitudeDisplacement", "airTemperature", "dewpointTemperature",
                "nonCoordinateGeopotential", "nonCoordinateGeopotentialHeight", "windSpeed", "windDirection",
                level=True),
    ],
    "aircraft": [
        _Select("aircraftFlightNumber", ("aircraftFlightNumber", "any"),
                ("aircraftRegistrationNumberOrOtherIdentification", "any")),
    ] + _TIME_AND_PLACE + [
        _Select("pressure"), _Select("height", ("height", "any"), ("globalNavigationSatelliteSystemAltitude", "any")),
        *_plain("flightLevel", "airTemperature", "windSpeed", "windDirection"),
    ],
}
_QUALIFIERS: dict[str, frozenset[str]] = {
    "synop": frozenset({_SENSOR_HEIGHT, _TIME_PERIOD}), "temp": frozenset(), "aircraft": frozenset(),
}
_LEVEL_KEY = {"temp": "pressure"}
_WANTED = {kind: frozenset(e for s in sel for e, _ in s.candidates) | _QUALIFIERS[kind] for kind, sel in SELECTIONS.items()}
_BY_ELEMENT: dict[str, dict[str, list[tuple[_Select, int, str]]]] = {}
for _kind, _sels in SELECTIONS.items():
    for _sel in _sels:
        for _index, (_element, _rule) in enumerate(_sel.candidates):
            _BY_ELEMENT.setdefault(_kind, {}).setdefault(_element, []).append((_sel, _index, _rule))


#: Qualifier state before any qualifier of the subset: "not qualified" (unlike NaN, "qualified
#: as not reported"): an element outside any qualified group (a TEMP level read as SYNOP) is no
#: screen-level or 10-minute value.
_UNSET = -1.0e300


def _rank(rule: str, height: np.ndarray, period: np.ndarray) -> np.ndarray:
    """Rank per subset of an occurrence under ``rule``: 0 best, 1 fallback, 2 rejected."""
    if rule == "screen":
        lo, hi = SCREEN_HEIGHT_M
        with np.errstate(invalid="ignore"):
            return np.where((height >= lo) & (height <= hi), 0, np.where(np.isnan(height), 1, 2))
    if rule == "wind":
        return np.where(period == WIND_PERIOD_MIN, 0, np.where(np.isnan(period), 1, 2))
    return np.zeros(height.shape, dtype=np.int64)


def _walk(elements: tuple[str, ...], columns: list[np.ndarray], kind: str, n: int) -> tuple[dict[str, np.ndarray], int]:
    """Select the output columns of ``n`` subsets that share one sequence of wanted keys.

    Parameters
    ----------
    elements : tuple of str
        The wanted data keys of the subsets' primary data, in order.
    columns : list of numpy.ndarray
        Per key, its values, shape (n,): float64 (NaN missing) or object (str).
    kind : str
        Chooses :data:`SELECTIONS`.
    n : int
        Number of subsets.

    Returns
    -------
    (dict, int)
        Column -> values of shape (n * n_levels,), subset-major, levels in order; the number of
        levels per subset (1 except TEMP). A column is absent when none of its elements occurs
        under acceptable qualifiers.
    """
    by_element = _BY_ELEMENT[kind]
    qualifiers = _QUALIFIERS[kind]
    level_key = _LEVEL_KEY.get(kind)
    n_levels = max(1, elements.count(level_key)) if level_key else 1
    height = np.full(n, _UNSET)
    period = np.full(n, _UNSET)
    best: dict[str, np.ndarray] = {}
    value: dict[str, np.ndarray] = {}
    level = -1
    for element, values in zip(elements, columns):
        if element in qualifiers:
            if element == _SENSOR_HEIGHT:
                height = values
            else:
                period = values
            continue
        if element == level_key:
            level += 1
        for sel, index, rule in by_element.get(element, ()):
            col = (level + 1 if sel.prefix else level) if sel.level else 0
            if not 0 <= col < n_levels:
                continue
            rank = _rank(rule, height, period)
            if sel.column not in value:
                if not (rank < 2).any():  # no acceptable occurrence yet: the column stays absent
                    continue
                width = n_levels if sel.level else 1
                value[sel.column] = np.full((n, width), "" if values.dtype == object else np.nan, dtype=values.dtype)
                best[sel.column] = np.full((n, width), 1 << 30, dtype=np.int64)
            if values.dtype == object:
                present = np.fromiter((bool(str(v).strip()) for v in values), dtype=bool, count=n)
            else:
                present = ~np.isnan(values)
            order = index * 4 + rank
            better = present & (rank < 2) & (order < best[sel.column][:, col])
            if better.any():
                value[sel.column][better, col] = values[better]
                best[sel.column][better, col] = order[better]
    out: dict[str, np.ndarray] = {}
    for column, block in value.items():
        if block.shape[1] != n_levels:  # a report value, the same on every level
            block = np.repeat(block, n_levels, axis=1)
        out[column] = block.reshape(-1)
    return out, n_levels


def _layout(handle: Any, wanted: frozenset[str]) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """Per subset, the wanted data keys of its primary data in order: ``(elements, ranks)``.

    Primary data: the keys before the subset's first data-description operator (``operator``,
    e.g. 2 22 000 quality information). An uncompressed multi-subset message marks each subset
    with a ``subsetNumber`` key; a compressed message has one layout for all its subsets.
    """
    subsets: list[tuple[list[str], list[int]]] = [([], [])]
    primary, started = True, False
    it = eccodes.codes_bufr_keys_iterator_new(handle)
    try:
        while eccodes.codes_bufr_keys_iterator_next(it):
            name = eccodes.codes_bufr_keys_iterator_get_name(it)
            if name == "subsetNumber":
                if started:
                    subsets.append(([], []))
                started, primary = True, True
            elif name == "operator":
                primary = False
            elif name.startswith("#") and "->" not in name:
                started = True
                if primary:
                    _, rank, element = name.split("#", 2)
                    if element in wanted:
                        subsets[-1][0].append(element)
                        subsets[-1][1].append(int(rank))
    finally:
        eccodes.codes_bufr_keys_iterator_delete(it)
    return [(tuple(e), tuple(r)) for e, r in subsets]


#: Replication-factor keys and their descriptors (Table B class 31).
_REPLICATION_KEYS = {"delayedDescriptorReplicationFactor": (31001,), "shortDelayedDescriptorReplicationFactor": (31000,),
                     "extendedDelayedDescriptorReplicationFactor": (31002,),
                     "delayedDescriptorAndDataRepetitionFactor": (31011, 31012)}


def _layout_key(handle: Any) -> tuple[tuple | None, bool, int]:
    """``(key, compressed, n_subsets)`` of an unpacked message; ``key`` is what its key layout
    depends on, or None when it cannot be cached.

    The expanded descriptors and the replication factors (data, known after unpacking) fix the
    key sequence of a compressed message and of a one-subset message (the expanded descriptors
    alone do not: they can coincide for different replications); an uncompressed multi-subset
    message may replicate differently per subset, so its layout is read every time (None).
    """
    compressed = eccodes.codes_get(handle, "compressedData") == 1
    n_sub = int(eccodes.codes_get(handle, "numberOfSubsets"))
    if not compressed and n_sub > 1:
        return None, compressed, n_sub
    expanded = eccodes.codes_get_array(handle, "expandedDescriptors")
    parts: list[Any] = [compressed, n_sub, expanded.tobytes()]
    for key, codes in _REPLICATION_KEYS.items():
        if np.isin(expanded, codes).any():
            parts.append(np.asarray(eccodes.codes_get_array(handle, key)).tobytes())
    return tuple(parts), compressed, n_sub


def _numbers(values: Any) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64)
    out[(out == eccodes.CODES_MISSING_DOUBLE) | (out == _MISSING_LONG)] = np.nan
    return out


def _fetch_any(handle: Any, element: str, rank: int, n_subsets: int) -> np.ndarray:
    """``#rank#element`` of a compressed message for all subsets, shape (n_subsets,)."""
    key = f"#{rank}#{element}"
    if element in _STRINGS:
        values = np.asarray(eccodes.codes_get_string_array(handle, key), dtype=object)
    else:
        values = _numbers(eccodes.codes_get_double_array(handle, key))
    if values.size == 1:
        values = np.repeat(values, n_subsets)
    if values.size != n_subsets:
        raise _Unsupported(f"{key} has {values.size} values for {n_subsets} subsets")
    return values


class _Groups:
    """Subsets grouped by their sequence of wanted keys, in file order within each group."""

    def __init__(self) -> None:
        self.groups: dict[Any, tuple[tuple[str, ...], list[list[np.ndarray]], list[int]]] = {}
        self.n_subsets = 0

    def add(self, key: Any, elements: tuple[str, ...], values: list[np.ndarray], m: int = 1) -> None:
        """``values``: per element, shape (m,) for ``m`` consecutive subsets."""
        group = self.groups.setdefault(key, (elements, [[] for _ in elements], []))
        for store, v in zip(group[1], values):
            store.append(v)
        group[2].extend(range(self.n_subsets, self.n_subsets + m))
        self.n_subsets += m


def _scalars(elements: tuple[str, ...], ranks: tuple[int, ...], arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
    return [arrays[e][r - 1:r] for e, r in zip(elements, ranks)]


def read_qualified(path: str | os.PathLike[str], kind: str, *, vectorised: bool = True,
                   compressed_only: bool = False) -> pd.DataFrame | None:
    """Decode a SYNOP, TEMP or aircraft BUFR file selecting elements by their qualifiers.

    Parameters
    ----------
    path : str or os.PathLike
        BUFR file (compressed or uncompressed messages, any number of subsets).
    kind : {"synop", "temp", "aircraft"}
        Chooses the output columns and their rules (:data:`SELECTIONS`).
    vectorised : bool, optional
        Walk subsets that share a key sequence together (True) or each subset on its own
        (False: the reference the vectorised walk is tested against).
    compressed_only : bool, optional
        Return None as soon as a message is not compressed (the ``"eccodes"`` engine).

    Returns
    -------
    pandas.DataFrame or None
        One row per subset (SYNOP, aircraft) or per ``pressure`` occurrence (TEMP levels, in
        order), in file order, with columns named like pdbufr's keys: ``data_datetime``
        (``datetime64[us]``; TEMP levels of templates 309052/309057 shifted by their time
        displacement 0 04 086), ``WMO_station_id``, ``latitude``, ``longitude`` (TEMP levels
        shifted by 0 05 015/0 06 015 displacements), then the :data:`SELECTIONS` columns present
        in at least one message, e.g. ``airTemperatureAt2M``: the 2 m temperature, from
        ``airTemperatureAt2M`` or from ``airTemperature`` under a screen-level sensor height.
        None when the file has no message, or a message that is not supported.

    Raises
    ------
    InputError
        Truncated or corrupt BUFR.
    """
    groups = _Groups()
    layouts: dict[tuple, list[tuple[tuple[str, ...], tuple[int, ...]]]] = {}  # by _layout_key
    wanted = _WANTED[kind]
    try:
        for handle in bufr_messages(path):
            try:
                if compressed_only and eccodes.codes_get(handle, "compressedData") != 1:
                    return None
                # no attribute keys (->units, ->code, ...): a much cheaper unpack (as pdbufr does)
                eccodes.codes_set(handle, "skipExtraKeyAttributes", 1)
                eccodes.codes_set(handle, "unpack", 1)
                key, compressed, n_sub = _layout_key(handle)  # after unpacking: replications are data
                if key is None:
                    subsets = _layout(handle, wanted)
                else:
                    if key not in layouts:
                        layouts[key] = _layout(handle, wanted)
                    subsets = layouts[key]
                if compressed:
                    if len(subsets) != 1:
                        return None
                    elements, ranks = subsets[0]
                    values = [_fetch_any(handle, e, r, n_sub) for e, r in zip(elements, ranks)]
                    if vectorised:
                        groups.add(elements, elements, values, n_sub)
                    else:
                        for s in range(n_sub):
                            groups.add(groups.n_subsets, elements, [v[s:s + 1] for v in values])
                    continue
                if len(subsets) != n_sub:
                    return None
                arrays = {}
                for element in {e for elements, _ in subsets for e in elements}:
                    if element in _STRINGS:
                        arrays[element] = np.asarray(eccodes.codes_get_string_array(handle, element), dtype=object)
                    else:  # missing markers become NaN once per column, in _assemble
                        arrays[element] = eccodes.codes_get_double_array(handle, element)
                for elements, ranks in subsets:
                    groups.add(elements if vectorised else groups.n_subsets, elements, _scalars(elements, ranks, arrays))
            except _Unsupported:
                return None
    except _DECODE_ERRORS as exc:
        raise _decode_error(path, exc) from exc
    if groups.n_subsets == 0:
        return None
    return _assemble(groups, kind)


def _assemble(groups: _Groups, kind: str) -> pd.DataFrame:
    """Walk every group and put its rows back in file order."""
    walked = []
    levels = np.ones(groups.n_subsets, dtype=np.int64)
    for elements, stores, subsets in groups.groups.values():
        n = len(subsets)
        columns = [np.concatenate(s) if len(s) > 1 else s[0] for s in stores]
        columns = [c if c.dtype == object else _numbers(c) for c in columns]
        if not elements:  # subsets without any wanted key: one empty row each
            continue
        cols, n_levels = _walk(elements, columns, kind, n)
        levels[subsets] = n_levels
        walked.append((cols, np.asarray(subsets), n_levels))
    start = np.concatenate([[0], np.cumsum(levels)[:-1]])
    n_rows = int(levels.sum())
    out: dict[str, np.ndarray] = {}
    for cols, subsets, n_levels in walked:
        rows = (start[subsets][:, None] + np.arange(n_levels)[None, :]).reshape(-1)
        for column, values in cols.items():
            if column not in out:
                out[column] = np.full(n_rows, "" if values.dtype == object else np.nan, dtype=values.dtype)
            out[column][rows] = values
    return _finish(out, n_rows, kind)


def _finish(cols: dict[str, np.ndarray], n: int, kind: str) -> pd.DataFrame:
    """Computed keys as pdbufr names them (``data_datetime``, ``WMO_station_id``); TEMP levels
    displaced by their time period [s] and latitude/longitude displacements [degree] when reported."""
    out: dict[str, Any] = {}
    if all(k in cols for k in _TIME_ELEMENTS[:3]):
        time = _datetimes(cols, n)
        if kind == "temp" and "timePeriod" in cols:
            offset = cols["timePeriod"]
            ok = ~np.isnan(offset)
            time = np.where(ok, time + (np.where(ok, offset, 0.0) * 1e6).astype(np.int64).astype("timedelta64[us]"), time)
        out["data_datetime"] = time
    if "blockNumber" in cols and "stationNumber" in cols:
        out["WMO_station_id"] = cols["blockNumber"] * 1000.0 + cols["stationNumber"]
    for column, values in cols.items():
        if column not in _TIME_ELEMENTS and column not in ("blockNumber", "stationNumber"):
            out[column] = values
    if kind == "temp":
        for coord, shift in (("latitude", "latitudeDisplacement"), ("longitude", "longitudeDisplacement")):
            if coord in out and shift in out:
                out[coord] = out[coord] + np.nan_to_num(out[shift])
    return pd.DataFrame(out, index=pd.RangeIndex(n))
