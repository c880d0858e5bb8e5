"""netCDF readers: point observations and gridded fields, through earthkit-data and xarray.

Files are opened with ``earthkit.data.from_source("file", path).to_xarray(...)`` (earthkit-data
is the access layer; it hands the file to xarray's netCDF4 backend) without decoding times, so
that a missing or undecodable time unit is reported, or replaced by the configuration, instead
of being guessed. ``_FillValue``/``missing_value``, ``scale_factor`` and ``add_offset`` are
applied (CF 1.11, section 2.5 and 8.1).

Point observations (:func:`read_netcdf_points`)
-----------------------------------------------
Two ways in, both giving the observation table of the BUFR readers
(:data:`obscast.components.obs.readers.bufr.COLUMNS` ``[kind]``, same dtypes), so QC and the
store treat the rows like BUFR reports:

* **CF discrete sampling geometries** (CF 1.11, chapter 9), global attribute ``featureType``
  ``point`` (every variable along one instance dimension) or ``timeSeries`` in the orthogonal
  or incomplete multidimensional representation (data ``(station, time)``, station coordinates
  ``(station,)``, time ``(time,)`` or ``(station, time)``). Coordinates are found by
  ``standard_name`` (``latitude``, ``longitude``, ``time``, ``air_pressure``,
  ``surface_altitude``) or ``axis``; the station identifier by ``cf_role = timeseries_id``;
  observed variables by their ``standard_name``, which must be a column of the kind. Ragged
  arrays (``sample_dimension``/``instance_dimension``) are refused with an error.
* **Files that are not CF**, through a declarative mapping (the ``netcdf`` key of a source,
  :class:`obscast.components.config.NetcdfMapping`): file variable -> CF name, units, an extra
  fill value, and the time's ``strptime`` format (text or integer times such as ``202401011200``)
  or its CF units. Every variable of a file is flattened to one row per element.

Units: a variable's unit (the mapping's ``units`` first, else its ``units`` attribute) is
converted to the canonical unit of :data:`obscast.components.obs.variables.VARIABLES` with Pint
(UDUNITS exponents such as ``m s-1`` are understood). A variable without a unit is a one-line
:class:`InputError` naming the file and the variable. Wind speed and direction give the
eastward/northward components and the reverse, like the BUFR readers.

Gridded fields (:func:`read_netcdf_gridded`)
--------------------------------------------
CF gridded fields on a regular latitude/longitude grid become the dataset layout of
:func:`obscast.components.obs.readers.grib.read_grib` (``member, time, level, latitude,
longitude``; CF names; float32; ``level`` in Pa ascending; latitude ascending). A variable is
named by its ``standard_name`` (or the ``variables`` override) and taken when that name is in
``VARIABLES``; the others are ignored. Per-dataset overrides
(:class:`obscast.components.config.NetcdfGridded`) supply units and the time reference where the
attributes are missing or undecodable. Without an override a missing unit, or a time that
cannot be decoded, is a one-line error naming the file and the variable.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from obscast.components.errors import InputError
from obscast.components.obs.conversions import _DEGREE_DECIMALS, normalise_longitude, wind_components, wind_speed_direction
from obscast.components.obs.readers.bufr import COLUMNS, Window, normalise_window
from obscast.components.obs.variables import VARIABLES

__all__ = [
    "NETCDF_MAGIC",
    "convert_units",
    "is_netcdf",
    "read_netcdf_gridded",
    "read_netcdf_points",
]

#: File signatures of netCDF classic (``CDF\\x01``, ``CDF\\x02``, ``CDF\\x05``) and netCDF-4/HDF5.
NETCDF_MAGIC: tuple[bytes, ...] = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")

_FEATURE_TYPES = ("point", "timeseries")
_INT_COLUMNS = ("channel", "wind_computation_method")


def is_netcdf(path: str | os.PathLike[str]) -> bool:
    """Whether a local file starts with a netCDF signature (:data:`NETCDF_MAGIC`)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return any(head.startswith(m) for m in NETCDF_MAGIC)


# ------------------------------------------------------------------ units
@lru_cache(maxsize=1)
def _registry():
    import pint

    return pint.UnitRegistry()


_EXPONENT = re.compile(r"([A-Za-z_%]+)(-?\d+)")


def _pint_units(units: str) -> str:
    """UDUNITS spelling to Pint's: ``m s-1`` -> ``m*s**-1``, ``m2 s-2`` -> ``m**2*s**-2``."""
    text = units.strip()
    aliases = {"1": "dimensionless", "": "dimensionless", "degrees": "degree", "percent": "percent"}
    if text in aliases:
        return aliases[text]
    return "*".join(_EXPONENT.sub(r"\1**\2", part) for part in text.split())


def convert_units(values: np.ndarray, units: str, target: str) -> np.ndarray:
    """Convert values from ``units`` to ``target`` (UDUNITS spellings) with Pint.

    Parameters
    ----------
    values : numpy.ndarray
        Any shape; NaN stays NaN.
    units, target : str
        E.g. ``"degC"`` and ``"K"``, ``"hPa"`` and ``"Pa"``, ``"knot"`` and ``"m s-1"``.

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``values``.

    Raises
    ------
    ValueError
        Unknown unit, or units of different dimensions.
    """
    if units.strip() == target.strip():
        return np.asarray(values, dtype=np.float64)
    ureg = _registry()
    try:
        q = ureg.Quantity(np.asarray(values, dtype=np.float64), _pint_units(units))
        return np.asarray(q.to(_pint_units(target)).magnitude, dtype=np.float64)
    except Exception as exc:  # pint raises several unrelated classes
        raise ValueError(f"cannot convert {units!r} to {target!r}: {exc}") from None


# ------------------------------------------------------------------ opening
def _open(path: str | os.PathLike[str]) -> xr.Dataset:
    """The file as an xarray Dataset (times not decoded), through earthkit-data."""
    if not os.path.exists(path):
        raise InputError(path, "file", "an existing netCDF file", found="no such file")
    if not is_netcdf(path):
        raise InputError(path, "file", "a netCDF file (classic or netCDF-4)", found="another format")
    import earthkit.data as ekd

    try:
        return ekd.from_source("file", os.fspath(path)).to_xarray(decode_times=False, decode_timedelta=False).load()
    except Exception as exc:  # netCDF4/HDF5 errors of a truncated or corrupt file
        raise InputError(path, "netCDF file", "a complete, readable netCDF file", found=f"{type(exc).__name__}: {exc}") from exc


def _units_of(path: Any, ds: xr.Dataset, name: str, override: str | None, how: str) -> str:
    units = override if override is not None else ds[name].attrs.get("units")
    if units is None or str(units).strip() == "":
        raise InputError(path, name, f"a units attribute (or {how})", found="none")
    return str(units)


def _to_canonical(path: Any, name: str, values: np.ndarray, units: str, column: str) -> np.ndarray:
    try:
        return convert_units(values, units, VARIABLES[column].units)
    except ValueError as exc:
        raise InputError(path, name, f"a unit convertible to {VARIABLES[column].units} ({column})", found=repr(units)) from exc


def _decode_time(path: Any, ds: xr.Dataset, name: str, units: str | None, calendar: str | None, how: str,
                 values: np.ndarray | None = None) -> np.ndarray:
    """CF numeric times of variable ``name`` (or ``values``, e.g. broadcast) to datetime64[ns],
    same shape; NaN or fill values give NaT."""
    var = ds[name]
    units = units if units is not None else var.attrs.get("units")
    if units is None:
        raise InputError(path, name, f"a CF time units attribute '<unit> since <reference>' (or {how})", found="none")
    if " since " not in f" {str(units).strip()} ":
        raise InputError(path, name, f"a decodable CF time '<unit> since <reference>' (or {how})", found=f"units {units!r}")
    raw_values = np.asarray(var.values if values is None else values)
    raw = xr.Dataset({"t": (tuple(f"d{i}" for i in range(raw_values.ndim)), raw_values)})
    raw["t"].attrs.update({"units": units, "calendar": calendar or var.attrs.get("calendar", "standard")})
    try:
        decoded = xr.decode_cf(raw, use_cftime=False)["t"].values
        if decoded.dtype.kind != "M":
            raise TypeError(f"decoded to {decoded.dtype}")
        return np.asarray(decoded, dtype="datetime64[ns]")
    except Exception as exc:
        raise InputError(path, name, f"a decodable CF time (or {how})", found=f"units {units!r}: {type(exc).__name__}") from None


def _parse_time(path: Any, values: np.ndarray, fmt: str) -> np.ndarray:
    """Text or integer times with a strptime format; unparseable -> NaT (QC quarantines them)."""
    flat = np.asarray(values).ravel()
    if flat.dtype.kind == "f":
        text = [("" if not np.isfinite(v) else str(int(v))) for v in flat]
    else:
        text = [v.decode() if isinstance(v, bytes) else str(v) for v in flat]
    parsed = pd.to_datetime(pd.Series(text).str.strip(), format=fmt, errors="coerce", utc=True).dt.tz_localize(None)
    return parsed.to_numpy(dtype="datetime64[ns]").reshape(np.shape(values))


def _ids(values: np.ndarray) -> np.ndarray:
    out = []
    for v in np.asarray(values).ravel():
        if isinstance(v, bytes):
            v = v.decode(errors="replace")
        if isinstance(v, (float, np.floating)):
            v = "" if not np.isfinite(v) else (str(int(v)) if float(v).is_integer() else str(v))
        out.append(str(v).strip())
    return np.asarray(out, dtype=object).reshape(np.shape(values))


# ------------------------------------------------------------------ point observations
def _table(kind: str, cols: dict[str, np.ndarray], bounds: Any) -> pd.DataFrame:
    """Observation table of ``kind`` from flat columns (missing columns NaN), like the BUFR readers."""
    n = len(cols["time"])
    if "wind_speed" in cols and "eastward_wind" not in cols:
        cols["eastward_wind"], cols["northward_wind"] = wind_components(cols["wind_speed"], cols["wind_from_direction"]
                                                                        if "wind_from_direction" in cols else np.full(n, np.nan))
    elif "eastward_wind" in cols and "wind_speed" not in cols and "northward_wind" in cols:
        cols["wind_speed"], cols["wind_from_direction"] = wind_speed_direction(cols["eastward_wind"], cols["northward_wind"])
    out: dict[str, np.ndarray] = {
        "time": np.asarray(cols["time"], dtype="datetime64[ns]"),
        "latitude": np.round(np.asarray(cols["latitude"], np.float64), _DEGREE_DECIMALS),
        "longitude": normalise_longitude(np.round(np.asarray(cols["longitude"], np.float64), _DEGREE_DECIMALS)),
        "station_id": cols.get("station_id", np.full(n, "", dtype=object)),
    }
    for c in COLUMNS[kind][4:]:
        if c in _INT_COLUMNS:
            out[c] = np.nan_to_num(np.asarray(cols.get(c, np.full(n, -1)), np.float64), nan=-1).astype(np.int64)
        elif c == "surface_altitude":
            out[c] = np.asarray(cols.get(c, np.full(n, np.nan)), np.float64)
        else:
            out[c] = (np.asarray(cols.get(c, np.full(n, np.nan)), np.float64) + 0.0).astype(np.float32)
    table = pd.DataFrame({c: out[c] for c in COLUMNS[kind]})
    table["station_id"] = table["station_id"].astype(object)
    if bounds is not None:
        t = table["time"].to_numpy()
        table = table[(t > bounds[0]) & (t <= bounds[1])]
    return table.sort_values("time", kind="stable").reset_index(drop=True)


def _mapped(path: Any, ds: xr.Dataset, kind: str, mapping: Any) -> dict[str, np.ndarray]:
    """Flat columns of a file that is not CF, through a :class:`NetcdfMapping`."""
    how = "`units:` in the source's netcdf mapping"
    fields: dict[str, Any] = {"latitude": mapping.latitude, "longitude": mapping.longitude}
    for name in ("surface_altitude", "pressure"):
        if getattr(mapping, name, None) is not None:
            fields[name] = getattr(mapping, name)
    allowed = set(COLUMNS[kind][4:])
    for column in mapping.variables:
        if column not in allowed:
            raise InputError(path, column, f"a variable of a {kind} table ({sorted(allowed)})", found=f"{column!r} in the netcdf mapping")
    fields.update(mapping.variables)
    names = [f.variable for f in fields.values()] + [mapping.time.variable] + ([mapping.station_id] if mapping.station_id else [])
    for name in names:
        if name not in ds.variables:
            raise InputError(path, name, "the variable named in the source's netcdf mapping", found=f"not in the file (variables: {sorted(map(str, ds.variables))})")
    arrays = {n: np.asarray(a.values) for n, a in zip(names, xr.broadcast(*[ds[n] for n in names]))}
    cols: dict[str, np.ndarray] = {}
    for column, field in fields.items():
        values = arrays[field.variable].astype(np.float64).ravel()
        if field.fill_value is not None:
            values[values == field.fill_value] = np.nan
        if column in ("latitude", "longitude"):
            cols[column] = values  # degrees
            continue
        target = "altitude" if column == "surface_altitude" else ("air_pressure" if column == "pressure" else column)
        units = _units_of(path, ds, field.variable, field.units, how)
        cols[column] = _to_canonical(path, field.variable, values, units, target)
    t = mapping.time
    if t.format is not None:
        cols["time"] = _parse_time(path, arrays[t.variable], t.format).ravel()
    else:
        cols["time"] = _decode_time(path, ds, t.variable, t.units, None, how, values=arrays[t.variable]).ravel()
    if mapping.station_id:
        cols["station_id"] = _ids(arrays[mapping.station_id]).ravel()
    return cols


def _find(ds: xr.Dataset, standard_name: str, axis: str | None = None) -> str | None:
    for name, var in ds.variables.items():
        if var.attrs.get("standard_name") == standard_name or (axis and var.attrs.get("axis") == axis):
            return str(name)
    return None


def _dsg(path: Any, ds: xr.Dataset, kind: str) -> dict[str, np.ndarray]:
    """Flat columns of a CF discrete-sampling-geometry file (featureType point or timeSeries)."""
    feature = str(ds.attrs.get("featureType", "")).lower()
    if feature not in _FEATURE_TYPES:
        raise InputError(path, "featureType", "a CF discrete sampling geometry (global attribute featureType "
                         "point or timeSeries), or a `netcdf:` mapping in the source's configuration",
                         found=repr(ds.attrs.get("featureType")))
    if any("sample_dimension" in v.attrs or "instance_dimension" in v.attrs for v in ds.variables.values()):
        raise InputError(path, "sample_dimension", "the orthogonal or incomplete multidimensional representation",
                         found="a ragged array (CF 9.3.3/9.3.4)")
    how = "a `netcdf:` mapping with `units:` in the source's configuration"
    coords = {c: _find(ds, c, a) for c, a in (("latitude", "Y"), ("longitude", "X"), ("time", "T"))}
    for c, name in coords.items():
        if name is None:
            raise InputError(path, c, f"a variable with standard_name {c}", found="none")
    ids = next((str(n) for n, v in ds.variables.items() if v.attrs.get("cf_role") == "timeseries_id"), None)
    vertical = {c: _find(ds, sn) for c, sn in (("pressure", "air_pressure"), ("surface_altitude", "surface_altitude"))}
    allowed = set(COLUMNS[kind][4:])
    taken = set(coords.values()) | {ids} | set(vertical.values())
    data = {}
    for name, var in ds.data_vars.items():
        sn = var.attrs.get("standard_name")
        if name in taken or sn not in VARIABLES or sn not in allowed:
            continue
        data[sn] = str(name)
    if not data:
        raise InputError(path, "standard_name", f"data variables whose standard_name is a {kind} variable ({sorted(allowed & set(VARIABLES))})", found="none")
    names = [n for n in data.values()]
    data_dims = ds[names[0]].dims
    template = ds[names[0]]
    cols: dict[str, np.ndarray] = {}

    def flat(name: str) -> np.ndarray:
        return np.asarray(ds[name].broadcast_like(template).transpose(*data_dims).values).ravel()

    cols["latitude"] = flat(coords["latitude"]).astype(np.float64)
    cols["longitude"] = flat(coords["longitude"]).astype(np.float64)
    cols["time"] = np.asarray(
        _decode_time(path, ds, coords["time"], None, None, how), dtype="datetime64[ns]")
    tvar = xr.DataArray(cols["time"], dims=ds[coords["time"]].dims)
    cols["time"] = np.asarray(tvar.broadcast_like(template).transpose(*data_dims).values).ravel()
    if ids is not None:
        cols["station_id"] = _ids(flat(ids))
    for column, name in vertical.items():
        if name is not None and column in allowed:
            target = "air_pressure" if column == "pressure" else "altitude"
            cols[column] = _to_canonical(path, name, flat(name).astype(np.float64), _units_of(path, ds, name, None, how), target)
    for column, name in data.items():
        if ds[name].dims != data_dims:
            raise InputError(path, name, f"the dimensions {data_dims} of the other observed variables", found=ds[name].dims)
        cols[column] = _to_canonical(path, name, flat(name).astype(np.float64), _units_of(path, ds, name, None, how), column)
    return cols


def read_netcdf_points(
    path: str | os.PathLike[str], kind: str, window: Window = None, *, mapping: Any = None
) -> pd.DataFrame:
    """Read point observations from a netCDF file into an observation table.

    Parameters
    ----------
    path : str or os.PathLike
        netCDF file: a CF discrete sampling geometry (``featureType`` point or timeSeries), or
        any file described by ``mapping``.
    kind : {"synop", "temp", "aircraft", "satellite", "amv"}
        Observation kind: the table's columns (:data:`COLUMNS` ``[kind]``).
    window : None or (start, end), optional
        Keep only rows with ``start < time <= end`` (UTC).
    mapping : NetcdfMapping, optional
        Declarative mapping of a file that is not CF
        (:class:`obscast.components.config.NetcdfMapping`); when given, global attributes are
        ignored.

    Returns
    -------
    pandas.DataFrame
        Observation table of shape (n_elements, len(COLUMNS[kind])): one row per element of
        the (broadcast) data variables, values in the units of ``VARIABLES``, columns absent
        from the file NaN (-1 for integer codes), sorted stably by time. Rows whose time cannot
        be parsed have ``NaT`` (QC quarantines them as ``bad_coordinates``).

    Raises
    ------
    InputError
        One line naming the file and the field: the file missing, not netCDF or unreadable; no
        ``featureType`` of a DSG and no mapping; a ragged array; a coordinate missing; a
        variable without units (and none in the mapping), with a unit that does not convert, or
        named in the mapping but absent from the file; an undecodable time.
    ValueError
        Invalid ``window``; unknown ``kind``.
    """
    if kind not in COLUMNS:
        raise ValueError(f"kind must be one of {sorted(COLUMNS)}, got {kind!r}")
    bounds = normalise_window(window)
    ds = _open(path)
    cols = _mapped(path, ds, kind, mapping) if mapping is not None else _dsg(path, ds, kind)
    return _table(kind, cols, bounds)


# ------------------------------------------------------------------ gridded fields
def _axis(ds: xr.Dataset, names: tuple[str, ...], standard_name: str) -> str | None:
    for n in ds.dims:
        if n in ds.coords and ds[n].attrs.get("standard_name") == standard_name:
            return str(n)
    for n in names:
        if n in ds.dims:
            return n
    return None


def read_netcdf_gridded(path: str | os.PathLike[str], overrides: Any = None, window: Window = None) -> xr.Dataset:
    """Read CF gridded fields from a netCDF file into the layout of :func:`read_grib`.

    Parameters
    ----------
    path : str or os.PathLike
        netCDF file with variables on a regular latitude/longitude grid, dims any order of
        (``time``, [pressure level], ``latitude``, ``longitude``) (``member`` optional).
    overrides : NetcdfGridded, optional
        :class:`obscast.components.config.NetcdfGridded`: ``variables`` (file variable -> CF
        name), ``units`` (file variable -> unit), ``time_units``, ``calendar``.
    window : None or (start, end), optional
        Keep only times with ``start < t <= end`` (UTC).

    Returns
    -------
    xarray.Dataset
        Dims ``(member, time[, level], latitude, longitude)``: ``member`` int64 (size 1, value
        0 without one), ``time`` datetime64[ns] ascending, ``level`` float64 Pa ascending with
        ``standard_name=air_pressure`` (when a variable has a vertical dimension), ``latitude``
        ascending; data variables float32 named by CF standard name in the units of
        ``VARIABLES``, attrs ``standard_name``, ``units``, ``long_name``,
        ``netcdf_variable``.

    Raises
    ------
    InputError
        One line naming the file and the variable: file missing or not netCDF; no variable with
        a known CF name; a variable without a unit and no override (expected 'a units
        attribute (or `units:` ...)'); a unit that does not convert; a time without units or
        with undecodable ones and no override; a missing latitude/longitude/time dimension.
    ValueError
        Invalid ``window``.
    """
    bounds = normalise_window(window)
    ds = _open(path)
    variables = dict(getattr(overrides, "variables", None) or {})
    units_over = dict(getattr(overrides, "units", None) or {})
    how = "`units:` in the dataset's `netcdf:` overrides"
    lat = _axis(ds, ("latitude", "lat"), "latitude")
    lon = _axis(ds, ("longitude", "lon"), "longitude")
    time = _axis(ds, ("time", "valid_time"), "time")
    for field, name in (("latitude", lat), ("longitude", lon), ("time", time)):
        if name is None:
            raise InputError(path, field, f"a {field} dimension", found=f"dimensions {list(ds.dims)}")
    level = None
    for n in ds.dims:
        if n in ds.coords and (ds[n].attrs.get("standard_name") == "air_pressure" or n in ("level", "plev", "pressure", "isobaricInhPa")):
            level = str(n)
    member = next((str(n) for n in ("member", "number", "realization") if n in ds.dims), None)
    times = _decode_time(path, ds, time, getattr(overrides, "time_units", None), getattr(overrides, "calendar", None),
                         "`time_units:` in the dataset's `netcdf:` overrides")
    out = {}
    for name, var in ds.data_vars.items():
        name = str(name)
        cf = variables.get(name, var.attrs.get("standard_name"))
        if cf not in VARIABLES or lat not in var.dims or lon not in var.dims:
            continue
        units = _units_of(path, ds, name, units_over.get(name), how)
        values = _to_canonical(path, name, np.asarray(var.values, dtype=np.float64), units, cf)
        out[cf] = (var.dims, values.astype(np.float32), name)
    if not out:
        raise InputError(path, "standard_name", f"a variable whose standard_name (or `variables:` override) is one of {sorted(VARIABLES)}",
                         found=f"variables {sorted(map(str, ds.data_vars))}")
    coords: dict[str, Any] = {
        time: times,
        lat: np.asarray(ds[lat].values, np.float64),
        lon: np.asarray(ds[lon].values, np.float64),
    }
    if level is not None:
        lunits = _units_of(path, ds, level, units_over.get(level), how)
        coords[level] = _to_canonical(path, level, np.asarray(ds[level].values, np.float64), lunits, "air_pressure")
    if member is not None:
        coords[member] = np.asarray(ds[member].values, np.int64)
    data_vars = {cf: xr.Variable(dims, values) for cf, (dims, values, _) in out.items()}
    res = xr.Dataset(data_vars, coords={k: v for k, v in coords.items() if k in {d for dv in data_vars.values() for d in dv.dims}})
    rename = {time: "time", lat: "latitude", lon: "longitude"}
    if level is not None and level in res.dims:
        rename[level] = "level"
    if member is not None and member in res.dims:
        rename[member] = "member"
    res = res.rename({k: v for k, v in rename.items() if k != v})
    if "member" not in res.dims:
        res = res.expand_dims(member=np.array([0], dtype=np.int64))
    res = res.sortby("time").sortby("latitude")
    if "level" in res.dims:
        res = res.sortby("level")
        res["level"].attrs.update(standard_name="air_pressure", units="Pa", positive="down")
    if bounds is not None:
        t = res["time"].values
        res = res.isel(time=np.flatnonzero((t > bounds[0]) & (t <= bounds[1])))
    order = [d for d in ("member", "time", "level", "latitude", "longitude") if d in res.dims]
    for cf, (_, _, name) in out.items():
        dims = [d for d in order if d in res[cf].dims]
        res[cf] = res[cf].transpose(*dims)
        res[cf].attrs.update(standard_name=cf, units=VARIABLES[cf].units, long_name=VARIABLES[cf].long_name, netcdf_variable=name)
    res["latitude"].attrs.update(standard_name="latitude", units="degrees_north")
    res["longitude"].attrs.update(standard_name="longitude", units="degrees_east")
    res.attrs = {"source": os.fspath(path)}
    return res
