"""Reader for analysis-ready, cloud-optimised (ARCO) ERA5 zarr stores.

The layout is that of the public analysis-ready ERA5 stores, e.g. Google's
ARCO-ERA5 (``gs://gcp-public-data-arco-era5/ar/...``, Carver & Merose 2023,
https://github.com/google-research/arco-era5) and the WeatherBench 2 ERA5
copies (Rasp et al. 2024): one zarr group whose data variables carry ERA5's
long names (``temperature``, ``geopotential``, ``u_component_of_wind``,
``2m_temperature``, ``mean_sea_level_pressure``, ...) on the dimensions
``time`` (hourly), ``level`` (pressure in hPa, ascending), ``latitude``
(90 .. -90, descending) and ``longitude`` (0 .. 359.75). The public stores are
zarr format 2 with consolidated metadata (``.zmetadata``); format 3 stores
and stores without consolidated metadata are read too.

:func:`read_arco_era5` opens the store lazily (dask arrays, one dask chunk
per zarr chunk), cuts out the requested times, levels, area and variables,
renames the variables to obscast's CF standard names and returns obscast's
gridded layout, the one of :func:`obscast.components.obs.readers.grib.read_grib`. No
data chunk is read until the caller computes or writes the result, and then
only the chunks that overlap the selection (the ARCO stores hold one time
step per chunk, so a time range reads ``n_times`` chunks per variable).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from obscast.components.errors import InputError
from obscast.components.obs.variables import VARIABLES

__all__ = ["ARCO_VARIABLES", "read_arco_era5"]

#: Supported store variables: ARCO/WeatherBench name -> (output name, CF standard
#: name, height above ground in m or None). Variables on pressure levels and
#: mean-sea-level/surface fields keep their CF standard name as output name;
#: near-surface fields at a fixed height (2 m, 10 m) get the height as a suffix
#: so that they do not clash with the pressure-level variable of the same
#: standard name (their ``standard_name`` attribute is the CF one).
ARCO_VARIABLES: dict[str, tuple[str, str, float | None]] = {
    "temperature": ("air_temperature", "air_temperature", None),
    "geopotential": ("geopotential", "geopotential", None),
    "u_component_of_wind": ("eastward_wind", "eastward_wind", None),
    "v_component_of_wind": ("northward_wind", "northward_wind", None),
    "specific_humidity": ("specific_humidity", "specific_humidity", None),
    "mean_sea_level_pressure": ("air_pressure_at_mean_sea_level", "air_pressure_at_mean_sea_level", None),
    "surface_pressure": ("surface_air_pressure", "surface_air_pressure", None),
    "2m_temperature": ("air_temperature_2m", "air_temperature", 2.0),
    "2m_dewpoint_temperature": ("dew_point_temperature_2m", "dew_point_temperature", 2.0),
    "10m_u_component_of_wind": ("eastward_wind_10m", "eastward_wind", 10.0),
    "10m_v_component_of_wind": ("northward_wind_10m", "northward_wind", 10.0),
}

_OUTPUT_TO_ARCO = {out: name for name, (out, _, _) in ARCO_VARIABLES.items()}

# Dimension names of the ARCO stores.
_DIMS = ("time", "level", "latitude", "longitude")

# Tolerance for comparing coordinates (degrees, hPa).
_EPS = 1e-6


def _unit_key(units: str) -> str:
    """``"m**2 s**-2"`` -> ``"m2 s-2"`` (ECMWF/ARCO spelling to UDUNITS/CF spelling)."""
    return " ".join(units.replace("**", "").replace("^", "").split())


def _open_store(url_or_path: Any, storage_options: dict[str, Any] | None) -> tuple[Any, str]:
    """A zarr store object for a URL, a local path or a store, and the label for messages."""
    import zarr.storage

    if not isinstance(url_or_path, (str, os.PathLike)):
        return url_or_path, str(url_or_path)  # a zarr store object (e.g. a wrapped one in tests)
    label = os.fspath(url_or_path)
    protocol = label.split("://", 1)[0] if "://" in label else "file"
    if protocol == "file":
        local = label.split("://", 1)[-1]
        if not os.path.isdir(local):
            raise InputError(label, "store", "an existing zarr store (a directory)", found="no such directory")
        return zarr.storage.LocalStore(local, read_only=True), label
    try:
        store = zarr.storage.FsspecStore.from_url(label, storage_options=dict(storage_options or {}), read_only=True)
    except (ImportError, ValueError, OSError) as exc:
        raise InputError(label, "store", "a zarr store URL fsspec can open", found=f"{type(exc).__name__}: {exc}") from exc
    return store, label


def _open_dataset(store: Any, label: str) -> xr.Dataset:
    """Open lazily with consolidated metadata when present, without otherwise."""
    import zarr.errors

    last: Exception | None = None
    for consolidated in (True, False):
        try:
            # chunks=None and cache=False: lazily indexed zarr arrays, no dask graph yet (a dask
            # array per variable of the full ARCO store would hold ~1.3 million chunks each).
            return xr.open_dataset(
                store, engine="zarr", consolidated=consolidated, chunks=None, cache=False, decode_timedelta=False
            )
        except (ValueError, KeyError) as exc:  # no consolidated metadata: try without
            last = exc
            continue
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise InputError(label, "store", "an existing zarr group", found=f"{type(exc).__name__}: {exc}") from exc
        except OSError as exc:
            raise InputError(label, "store", "a readable zarr store", found=f"{type(exc).__name__}: {exc}") from exc
    raise InputError(label, "store", "a readable zarr group", found=f"{type(last).__name__}: {last}")


def _to_ns(value: Any, what: str) -> np.datetime64:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} {value!r} is not a time: {exc}") from None
    if pd.isna(ts):
        raise ValueError(f"{what} must not be NaT")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return np.datetime64(ts.as_unit("ns").to_datetime64(), "ns")


def _index(positions: np.ndarray) -> slice | np.ndarray:
    """A slice when ``positions`` are contiguous (step +1 or -1), else the positions."""
    if positions.size == 1:
        return slice(int(positions[0]), int(positions[0]) + 1)
    steps = np.diff(positions)
    if np.all(steps == 1):
        return slice(int(positions[0]), int(positions[-1]) + 1)
    if np.all(steps == -1):
        stop = int(positions[-1]) - 1
        return slice(int(positions[0]), None if stop < 0 else stop, -1)
    return positions


def _select_variables(ds: xr.Dataset, label: str, variables: Sequence[str] | None) -> list[str]:
    """ARCO names of the variables to read, in the order asked for."""
    available = [name for name in ARCO_VARIABLES if name in ds.data_vars]
    if variables is None:
        if not available:
            raise InputError(
                label, "variables", f"at least one of the supported ARCO variables {list(ARCO_VARIABLES)}",
                found=f"none; the store has {sorted(map(str, ds.data_vars))}",
            )
        return available
    if isinstance(variables, str):
        variables = [variables]
    chosen: list[str] = []
    for requested in variables:
        name = _OUTPUT_TO_ARCO.get(requested, requested)  # CF output names are accepted too
        if name not in ds.data_vars:
            raise InputError(
                label, requested, f"a variable of the store, one of {available}", found="not in the store"
            )
        if name not in ARCO_VARIABLES:
            raise InputError(
                label, requested, f"a variable obscast can read, one of {available}",
                found="a store variable without a CF mapping (see ARCO_VARIABLES)",
            )
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise InputError(label, "variables", f"at least one of {available}", found="an empty list")
    return chosen


def _check_dims(ds: xr.Dataset, label: str, names: list[str]) -> None:
    for name in names:
        dims = ds[name].dims
        if dims not in (_DIMS, ("time", "latitude", "longitude")):
            raise InputError(
                label, name, "dims (time, level, latitude, longitude) or (time, latitude, longitude)", found=dims
            )


def _time_index(ds: xr.Dataset, label: str, start: Any, end: Any) -> slice:
    lo, hi = _to_ns(start, "start"), _to_ns(end, "end")
    times = ds["time"].values.astype("datetime64[ns]")
    if times.size and np.any(np.diff(times) <= np.timedelta64(0, "ns")):
        raise InputError(label, "time", "strictly increasing times", found="unsorted or repeated times")
    i0 = int(np.searchsorted(times, lo, side="left"))
    i1 = int(np.searchsorted(times, hi, side="right"))
    if i1 <= i0:
        covered = f"{times[0]} .. {times[-1]}" if times.size else "no time at all"
        raise InputError(
            label, "time", f"at least one time step in [{lo}, {hi}]", found=f"none; the store covers {covered}"
        )
    return slice(i0, i1)


def _level_index(ds: xr.Dataset, label: str, levels: Sequence[float] | None) -> slice | np.ndarray:
    stored = np.asarray(ds["level"].values, dtype=np.float64)
    if levels is None:
        positions = np.argsort(stored, kind="stable")  # output ascending (top of atmosphere first)
        return _index(positions)
    wanted = np.unique(np.asarray(levels, dtype=np.float64))  # sorted ascending
    positions = []
    for level in wanted:
        hit = np.nonzero(np.abs(stored - level) < _EPS)[0]
        if hit.size == 0:
            raise InputError(
                label, "level", f"pressure levels of the store (hPa), one of {stored.tolist()}",
                found=f"{level:g} hPa",
            )
        positions.append(int(hit[0]))
    return _index(np.asarray(positions))


def _area_indices(
    ds: xr.Dataset, label: str, area: Sequence[float] | None
) -> tuple[slice | np.ndarray, list[slice], np.ndarray | None]:
    """Latitude index, longitude slices (one, or two across the store's seam) and new longitudes."""
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    lon = np.asarray(ds["longitude"].values, dtype=np.float64)
    if area is None:
        return _index(np.argsort(lat, kind="stable")), [slice(None)], None
    try:
        north, west, south, east = (float(v) for v in area)
    except (TypeError, ValueError):
        raise ValueError(f"area must be (north, west, south, east) in degrees, got {area!r}") from None
    if not (-90.0 <= south <= north <= 90.0):
        raise ValueError(f"area needs -90 <= south <= north <= 90, got north={north}, south={south}")
    lat_pos = np.nonzero((lat >= south - _EPS) & (lat <= north + _EPS))[0]
    lat_pos = lat_pos[np.argsort(lat[lat_pos], kind="stable")]
    # Longitudes east of ``west``: west normalised to [-180, 180), east to west + width.
    w = np.mod(west + 180.0, 360.0) - 180.0
    width = np.mod(east - west, 360.0)
    if width == 0.0 and east != west:
        width = 360.0
    shifted = w + np.mod(lon - w + _EPS, 360.0) - _EPS  # lon moved into [w, w + 360)
    lon_pos = np.nonzero(shifted <= w + width + _EPS)[0]
    lon_pos = lon_pos[np.argsort(shifted[lon_pos], kind="stable")]
    if lat_pos.size == 0 or lon_pos.size == 0:
        raise InputError(
            label, "area", f"at least one grid point in (north, west, south, east) = {tuple(area)}",
            found=f"none; grid latitudes {lat.min():g}..{lat.max():g}, longitudes {lon.min():g}..{lon.max():g}",
        )
    # Split into runs of consecutive store positions (two when the area crosses the store's seam).
    breaks = np.nonzero(np.diff(lon_pos) != 1)[0] + 1
    runs = np.split(lon_pos, breaks)
    if len(runs) > 2 or any(np.any(np.diff(r) != 1) for r in runs):
        raise InputError(label, "longitude", "monotonic, evenly ordered longitudes", found="an unordered grid")
    lon_slices = [slice(int(r[0]), int(r[-1]) + 1) for r in runs]
    return _index(lat_pos), lon_slices, np.round(shifted[lon_pos], 9) + 0.0


def _chunked(sub: xr.Dataset, ds: xr.Dataset, names: list[str], indexers: dict[str, Any]) -> xr.Dataset:
    """The lazily indexed subset as dask arrays whose chunks follow the store's zarr chunks.

    Along each dimension the store positions kept (``indexers``) are grouped into runs that fall
    in the same zarr chunk; each run becomes one dask chunk, so every zarr chunk is read by one
    task only, and only when it overlaps the selection.
    """
    out = {}
    for name in names:
        encoding = ds[name].encoding
        sizes = encoding.get("preferred_chunks") or dict(zip(ds[name].dims, encoding.get("chunks") or ()))
        chunks: dict[str, Any] = {}
        for dim in sub[name].dims:
            size = sizes.get(dim)
            if not size:
                chunks[dim] = -1
                continue
            positions = np.arange(ds.sizes[dim])[indexers.get(dim, slice(None))]
            ids = positions // int(size)
            starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
            chunks[dim] = tuple(int(n) for n in np.diff(np.r_[starts, ids.size]))
        out[name] = sub[name].chunk(chunks)
    return xr.Dataset(out, attrs=sub.attrs)


def _checked_units(label: str, name: str, var: xr.DataArray, units: str) -> None:
    found = var.attrs.get("units")
    if found is not None and _unit_key(str(found)) != _unit_key(units):
        raise InputError(label, name, f"units {units!r}", found=repr(found))


def read_arco_era5(
    url_or_path: Any,
    start: Any,
    end: Any,
    levels: Sequence[float] | None = None,
    area: Sequence[float] | None = None,
    variables: Sequence[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> xr.Dataset:
    """Open an ARCO-style ERA5 zarr store lazily and cut out a subset in obscast's layout.

    Parameters
    ----------
    url_or_path : str, os.PathLike or zarr store
        Local directory, ``file://``, ``gs://``, ``s3://`` or ``https://`` URL
        of the zarr group (remote protocols need their fsspec package, e.g.
        gcsfs for ``gs://``), or a ``zarr.abc.store.Store`` object.
    start, end : str, datetime, numpy.datetime64 or pandas.Timestamp
        Time range, *inclusive* at both ends (``start <= time <= end``), UTC
        (tz-aware bounds are converted, naive ones taken as UTC).
    levels : sequence of float, optional
        Pressure levels to keep, in hPa as in the store (e.g.
        ``[850, 500, 250]``); all levels when None.
    area : (north, west, south, east), optional
        Box in degrees, the order of the CDS/MARS ``area`` keyword. ``west``
        and ``east`` may be given in [-180, 180) or [0, 360); the box runs
        eastward from ``west`` to ``east``, so ``west > east`` (e.g. 170,
        -170) crosses the dateline and (-10, 10) crosses the Greenwich
        meridian; both work on a 0..360 store. Edges are inclusive. Whole
        globe when None.
    variables : sequence of str, optional
        Store names (keys of :data:`ARCO_VARIABLES`, e.g. ``"temperature"``)
        or obscast output names (e.g. ``"air_temperature"``); all supported
        variables in the store when None.
    storage_options : dict, optional
        Passed to fsspec for URLs (e.g. ``{"token": "anon"}`` for public GCS
        buckets). Never logged or stored in the result.

    Returns
    -------
    xarray.Dataset
        Lazy (dask-backed) dataset in the layout of
        :func:`obscast.components.obs.readers.grib.read_grib`:

        * ``member`` (int64), size 1, value 0 (reanalysis: no ensemble);
        * ``time`` (datetime64[ns]), ascending, the selected store times;
        * ``level`` (float64, Pa, ``standard_name=air_pressure``,
          ``positive=down``), ascending (top first), store hPa x 100; only
          when a selected variable is on pressure levels;
        * ``latitude`` (float64, degrees_north), ascending;
        * ``longitude`` (float64, degrees_east), ascending: the store's values
          (e.g. 0..359.75) without ``area``; with ``area``, the store's values
          shifted by multiples of 360 into ``[west', west' + width]`` with
          ``west'`` = ``west`` in [-180, 180), e.g. 170..190 for
          (170, -170) and -10..10 for (-10, 10).

        Data variables are float32, named by :data:`ARCO_VARIABLES` (e.g.
        ``temperature`` -> ``air_temperature``), with dims ``(member, time,
        level, latitude, longitude)`` (pressure levels) or ``(member, time,
        latitude, longitude)`` (single level), and attrs ``standard_name``,
        ``units`` (of :data:`obscast.components.obs.variables.VARIABLES`), ``long_name``,
        ``arco_name`` and, for 2 m / 10 m fields, ``height_above_ground_m``.
        The dataset attrs hold ``source`` (the URL or path).

    Raises
    ------
    InputError
        Store missing or unreadable (field ``'store'``); a requested variable
        not in the store or without a CF mapping (field = the name asked for;
        the message lists the supported variables of the store); no supported
        variable at all; a variable with other dims than those above; units
        that differ from the canonical ones (after turning ``m**2 s**-2`` into
        ``m2 s-2``); no store time in ``[start, end]`` (field ``'time'``, the
        message gives the store's time range); a level not in the store
        (``'level'``); no grid point in ``area`` (``'area'``).
    ValueError
        ``start``/``end`` not times; ``area`` not four numbers or with
        ``south > north``.

    Notes
    -----
    Only metadata and the coordinate arrays (``time``, ``level``,
    ``latitude``, ``longitude``) are read here. The store is opened without
    dask (lazily indexed zarr arrays: a dask array of a full ARCO variable
    would hold about 1.3 million chunks), cut with plain slices wherever
    possible (a reversed slice for the descending latitudes; two slices
    joined with :func:`xarray.concat` for an area across the store's
    longitude seam), and only the subset is turned into dask arrays, one dask
    chunk per overlapped zarr chunk. Computing the result therefore reads
    exactly the zarr chunks that overlap the selection, each once.
    """
    store, label = _open_store(url_or_path, storage_options)
    ds = _open_dataset(store, label)
    for dim in ("time", "latitude", "longitude"):
        if dim not in ds.coords:
            raise InputError(label, dim, f"a {dim!r} coordinate", found=f"coordinates {sorted(map(str, ds.coords))}")
    names = _select_variables(ds, label, variables)
    _check_dims(ds, label, names)
    on_levels = any("level" in ds[n].dims for n in names)
    if on_levels and "level" not in ds.coords:
        raise InputError(label, "level", "a 'level' coordinate (hPa)", found="none")

    t_index = _time_index(ds, label, start, end)
    lat_index, lon_slices, new_lon = _area_indices(ds, label, area)
    sub = ds[names]
    indexers: dict[str, Any] = {"time": t_index, "latitude": lat_index}
    if on_levels:
        indexers["level"] = _level_index(ds, label, levels)
    elif levels is not None:
        _level_index(ds, label, levels)  # still validate the request
    sub = sub.isel(indexers)  # still lazily indexed: nothing read
    # One dask chunk per zarr chunk of the store (before the cut), per variable.
    parts = [_chunked(sub.isel(longitude=s), ds, names, {**indexers, "longitude": s}) for s in lon_slices]
    if len(parts) == 1:
        sub = parts[0]
    else:
        sub = xr.concat(parts, dim="longitude", data_vars="all", coords="minimal", compat="override", join="exact")
    if new_lon is not None:
        sub = sub.assign_coords(longitude=new_lon)
    if not on_levels and "level" in sub.coords:
        sub = sub.drop_vars("level")

    data_vars = {}
    for name in names:
        out, standard_name, height = ARCO_VARIABLES[name]
        var = VARIABLES[standard_name]
        _checked_units(label, name, ds[name], var.units)
        da = sub[name]
        if da.dtype != np.float32:
            da = da.astype(np.float32)
        attrs = {
            "standard_name": standard_name,
            "units": var.units,
            "long_name": var.long_name + (f" at {height:g} m above ground" if height is not None else ""),
            "arco_name": name,
        }
        if height is not None:
            attrs["height_above_ground_m"] = height
        data_vars[out] = (da.dims, da.data, attrs)

    coords: dict[str, Any] = {
        "member": ("member", np.zeros(1, dtype=np.int64), {"long_name": "ensemble member number"}),
        "time": ("time", sub["time"].values.astype("datetime64[ns]"), {"standard_name": "time", "long_name": "valid time"}),
        "latitude": ("latitude", sub["latitude"].values.astype(np.float64), {"standard_name": "latitude", "units": "degrees_north"}),
        "longitude": ("longitude", sub["longitude"].values.astype(np.float64), {"standard_name": "longitude", "units": "degrees_east"}),
    }
    if on_levels:
        coords["level"] = (
            "level",
            sub["level"].values.astype(np.float64) * 100.0,
            {"standard_name": "air_pressure", "units": "Pa", "positive": "down", "long_name": "pressure level"},
        )
    out_ds = xr.Dataset(data_vars, coords={k: v for k, v in coords.items() if k != "member"})
    out_ds = out_ds.expand_dims(member=coords["member"][1], axis=0)
    out_ds["member"].attrs.update(coords["member"][2])
    out_ds.attrs["source"] = label
    order = [d for d in ("member", "time", "level", "latitude", "longitude") if d in out_ds.dims]
    return out_ds.transpose(*order)
