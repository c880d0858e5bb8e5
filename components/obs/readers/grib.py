"""GRIB reader: gridded analyses/forecasts to a CF-named :class:`xarray.Dataset`.

The file is read in one pass with eccodes: every message's keys are read and
its values decoded once (only for the fields in the requested window), so a
truncated file is reported as such instead of surfacing an internal error and
no message is decoded twice (this is what brings the ingest of GRIB within
1.3x of ``xarray.open_dataset(engine="cfgrib")`` + ``to_zarr``, see
benchmarks/README.md). This module validates the parameters, places every field into a
``(member, time, level, latitude, longitude)`` cube and names it by CF
standard name.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import eccodes
import numpy as np
import pandas as pd
import xarray as xr

from obscast.components.errors import InputError
from obscast.components.obs.readers.bufr import Window, normalise_window
from obscast.components.obs.variables import VARIABLES

__all__ = ["GRIB_PARAMETERS", "read_grib"]

#: Supported GRIB parameters: shortName -> (CF standard name, ECMWF paramId).
#: paramIds from the ECMWF parameter database (https://codes.ecmwf.int/grib/param-db/).
GRIB_PARAMETERS: dict[str, tuple[str, int]] = {
    "z": ("geopotential", 129),
    "t": ("air_temperature", 130),
    "u": ("eastward_wind", 131),
    "v": ("northward_wind", 132),
    "q": ("specific_humidity", 133),
    "msl": ("air_pressure_at_mean_sea_level", 151),
    "sp": ("surface_air_pressure", 134),
}

# typeOfLevel -> factor from the GRIB ``level`` value to Pa; None = single level.
_LEVEL_TYPES: dict[str, float | None] = {
    "isobaricInhPa": 100.0,
    "isobaricInPa": 1.0,
    "surface": None,
    "meanSea": None,
}

_KEYS = (
    "shortName",
    "paramId",
    "typeOfLevel",
    "level",
    "number",
    "validityDate",
    "validityTime",
    "gridType",
    "md5GridSection",
)


def _fail(path: Any, field: str, expected: str, found: Any = None) -> InputError:
    return InputError(path, field, expected, found=found)


def _get(handle: int, key: str) -> Any:
    """One key of a message, None when the message does not define it (e.g. ``number``)."""
    try:
        return eccodes.codes_get(handle, key)
    except eccodes.KeyValueNotFoundError:
        return None


def _scan(path: str | os.PathLike[str], selected: Callable[[dict[str, Any]], bool]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Walk every message once with eccodes: its keys, and its values when ``selected(keys)``.

    Returns the records (``_KEYS`` plus ``"values"``: float32 ``(Nj * Ni,)`` with GRIB missing
    values as NaN, or None when not selected) and the grid of the first message
    (``{"shape": (Nj, Ni), "latitudes": (Nj,), "longitudes": (Ni,)}``). A truncated or corrupt
    message raises InputError naming its number.
    """
    records: list[dict[str, Any]] = []
    grid: dict[str, Any] = {}
    n = 0  # the message being read, from 1
    try:
        with open(path, "rb") as f:
            while True:
                n += 1
                handle = eccodes.codes_grib_new_from_file(f)
                if handle is None:
                    return records, grid
                try:
                    record = {k: _get(handle, k) for k in _KEYS}
                    record["values"] = None
                    if not grid and record["gridType"] == "regular_ll":
                        shape = (int(eccodes.codes_get(handle, "Nj")), int(eccodes.codes_get(handle, "Ni")))
                        lat = np.asarray(eccodes.codes_get_array(handle, "latitudes"), dtype=np.float64).reshape(shape)
                        lon = np.asarray(eccodes.codes_get_array(handle, "longitudes"), dtype=np.float64).reshape(shape)
                        grid = {"shape": shape, "latitudes": lat[:, 0], "longitudes": lon[0, :]}
                    if selected(record):
                        values = eccodes.codes_get_values(handle).astype(np.float32)
                        if eccodes.codes_get(handle, "bitmapPresent"):
                            values[values == np.float32(eccodes.codes_get(handle, "missingValue"))] = np.nan
                        record["values"] = values
                    records.append(record)
                finally:
                    eccodes.codes_release(handle)
    except eccodes.CodesInternalError as exc:
        what = (
            f"end of file inside message {n} (truncated)"
            if isinstance(exc, eccodes.PrematureEndOfFileError)
            else f"eccodes error in message {n}: {exc}"
        )
        raise _fail(path, "GRIB message", "a complete GRIB message", what) from exc
    except OSError as exc:
        raise _fail(path, "file", "a readable GRIB file", f"{type(exc).__name__}: {exc}") from exc


def _valid_time(date: Any, hhmm: Any) -> np.datetime64:
    d, t = int(date), int(hhmm)
    return np.datetime64(
        pd.Timestamp(year=d // 10000, month=d // 100 % 100, day=d % 100, hour=t // 100, minute=t % 100),
        "ns",
    )


def read_grib(path: str | os.PathLike[str], window: Window = None) -> xr.Dataset:
    """Read a GRIB (edition 1 or 2) file into a CF-named dataset.

    Parameters
    ----------
    path : str or os.PathLike
        GRIB file on a regular latitude/longitude grid, all fields on the
        same grid, holding only the parameters of :data:`GRIB_PARAMETERS`
        on pressure levels (``isobaricInhPa``/``isobaricInPa``) or single
        levels (``surface``/``meanSea``).
    window : None or (start, end), optional
        Keep only fields whose valid time ``t`` satisfies
        ``start < t <= end`` (UTC); see
        :func:`obscast.components.obs.readers.bufr.normalise_window`.

    Returns
    -------
    xarray.Dataset
        Dimensions and coordinates:

        * ``member`` (int64): ensemble ``number``; size 1 with value 0 when
          the file has no ensemble number;
        * ``time`` (datetime64[ns]): valid time (``validityDate``/``Time``),
          ascending;
        * ``level`` (float64, Pa, ``standard_name=air_pressure``,
          ``positive=down``), ascending (top of atmosphere first); present
          when any field is on pressure levels;
        * ``latitude`` (float64, degrees_north) ascending -90..90;
        * ``longitude`` (float64, degrees_east) as in the file, e.g. [0, 360).

        Data variables are float32, named by CF standard name, with attrs
        ``standard_name``, ``units`` (the unit of
        :data:`obscast.components.obs.variables.VARIABLES`), ``long_name``,
        ``grib_short_name`` and ``grib_param_id``. Pressure-level variables
        have dims ``(member, time, level, latitude, longitude)``;
        single-level variables (msl, sp) ``(member, time, latitude,
        longitude)``. Combinations absent from the file are NaN, as are
        GRIB missing values (bitmap).

    Raises
    ------
    InputError
        File missing (field ``'file'``); truncated or corrupt
        (``'GRIB message'``, expected ``'a complete GRIB message'``); no
        GRIB message; a parameter not in :data:`GRIB_PARAMETERS` (field
        ``'shortName'``, found ``"<shortName> (paramId <id>)"``); an
        unsupported ``typeOfLevel`` or ``gridType``; fields on different
        grids; the same (parameter, member, time, level) twice.
    ValueError
        Invalid ``window``.
    """
    bounds = normalise_window(window)
    if not os.path.exists(path):
        raise _fail(path, "file", "an existing GRIB file", "no such file")
    if not os.path.isfile(path):
        raise _fail(path, "file", "an existing GRIB file", "not a regular file")

    def in_window(r: dict[str, Any]) -> bool:
        if bounds is None:
            return True
        try:
            return bool(bounds[0] < _valid_time(r["validityDate"], r["validityTime"]) <= bounds[1])
        except (TypeError, ValueError):
            return True  # an undecodable valid time is reported below

    # One pass over the file: keys of every message, values of the messages in the window.
    records, grid = _scan(path, in_window)
    if not records:
        raise _fail(path, "GRIB message", "at least one GRIB message", "none")

    allowed = f"one of {list(GRIB_PARAMETERS)} (paramIds {[pid for _, pid in GRIB_PARAMETERS.values()]})"
    for i, r in enumerate(records):
        if r["shortName"] not in GRIB_PARAMETERS:
            raise _fail(
                path, "shortName", allowed,
                f"{r['shortName']} (paramId {r['paramId']}) in message {i + 1}",
            )
        if r["typeOfLevel"] not in _LEVEL_TYPES:
            raise _fail(path, "typeOfLevel", f"one of {list(_LEVEL_TYPES)}", f"{r['typeOfLevel']} in message {i + 1}")
        if r["gridType"] != "regular_ll":
            raise _fail(path, "gridType", "regular_ll", f"{r['gridType']} in message {i + 1}")
        if r["md5GridSection"] != records[0]["md5GridSection"]:
            raise _fail(path, "grid", "the same grid in every message", f"a different grid in message {i + 1}")
        scale = _LEVEL_TYPES[r["typeOfLevel"]]
        r["pressure"] = None if scale is None else float(r["level"]) * scale
        r["member"] = 0 if r["number"] is None else int(r["number"])
        r["time"] = _valid_time(r["validityDate"], r["validityTime"])

    members = np.array(sorted({r["member"] for r in records}), dtype=np.int64)
    levels = np.array(sorted({r["pressure"] for r in records if r["pressure"] is not None}), dtype=np.float64)
    selected = [
        i for i, r in enumerate(records)
        if bounds is None or bounds[0] < r["time"] <= bounds[1]
    ]
    times = np.array(sorted({records[i]["time"] for i in selected}), dtype="datetime64[ns]")

    lat, lon = grid["latitudes"], grid["longitudes"]
    lat_order = np.argsort(lat, kind="stable")
    ny, nx = lat.size, lon.size

    m_index = {m: k for k, m in enumerate(members.tolist())}
    t_index = {t: k for k, t in enumerate(times)}
    l_index = {p: k for k, p in enumerate(levels.tolist())}
    cubes: dict[str, np.ndarray] = {}
    filled: dict[str, np.ndarray] = {}
    for i in selected:
        r = records[i]
        name = r["shortName"]
        on_levels = r["pressure"] is not None
        if name not in cubes:
            shape = (members.size, times.size) + ((levels.size,) if on_levels else ()) + (ny, nx)
            cubes[name] = np.full(shape, np.nan, dtype=np.float32)
            filled[name] = np.zeros(shape[:-2], dtype=bool)
        elif (cubes[name].ndim == 5) != on_levels:
            raise _fail(path, "typeOfLevel", f"one level type for {name}", f"mixed in message {i + 1}")
        key = (m_index[r["member"]], t_index[r["time"]]) + ((l_index[r["pressure"]],) if on_levels else ())
        if filled[name][key]:
            raise _fail(
                path, "GRIB message", "one field per (shortName, number, valid time, level)",
                f"a duplicate {name} field in message {i + 1}",
            )
        values = r["values"].reshape(ny, nx)
        cubes[name][key] = values[lat_order]
        filled[name][key] = True

    # Variables that the window removed entirely still get an (empty) entry.
    for r in records:
        name = r["shortName"]
        if name not in cubes:
            on_levels = r["pressure"] is not None
            shape = (members.size, times.size) + ((levels.size,) if on_levels else ()) + (ny, nx)
            cubes[name] = np.full(shape, np.nan, dtype=np.float32)

    data_vars = {}
    for short, cube in cubes.items():
        standard_name, param_id = GRIB_PARAMETERS[short]
        var = VARIABLES[standard_name]
        dims = ("member", "time") + (("level",) if cube.ndim == 5 else ()) + ("latitude", "longitude")
        data_vars[standard_name] = (
            dims,
            cube,
            {
                "standard_name": standard_name,
                "units": var.units,
                "long_name": var.long_name,
                "grib_short_name": short,
                "grib_param_id": param_id,
            },
        )
    coords: dict[str, Any] = {
        "member": ("member", members, {"long_name": "ensemble member number"}),
        "time": ("time", times, {"standard_name": "time", "long_name": "valid time"}),
        "latitude": ("latitude", lat[lat_order], {"standard_name": "latitude", "units": "degrees_north"}),
        "longitude": ("longitude", lon, {"standard_name": "longitude", "units": "degrees_east"}),
    }
    if levels.size:
        coords["level"] = (
            "level",
            levels,
            {"standard_name": "air_pressure", "units": "Pa", "positive": "down", "long_name": "pressure level"},
        )
    ds = xr.Dataset(data_vars, coords=coords, attrs={"source": os.fspath(path)})
    order = [d for d in ("member", "time", "level", "latitude", "longitude") if d in ds.dims]
    return ds.transpose(*order)
