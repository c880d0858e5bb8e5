"""Where raw files come from, and which reader opens each: the data-access layer of the ingest.

* **Local files** (paths and glob patterns, ``store:raw/...`` in a local store): as they are.
* **Objects on S3** (``s3://bucket/raw/*.bufr`` globs, or ``store:raw/...`` when the store is on
  S3): listed and fetched through s3fs with the store's ``storage_options`` (so the same
  endpoint and credentials), into a local cache (eccodes and netCDF4 read local files). A cached
  copy is named by the object's ETag (or, without one, its size and modification time), so a
  changed object is fetched again, and the file catalogue, keyed by the local path, scans it
  again; an unchanged one is never fetched twice. Cache folder: ``$OBSCAST_RAW_CACHE``, default
  ``<tmp>/obscast-raw``.
* **earthkit-data sources** (the ``earthkit`` key of a source or gridded dataset:
  ``url``, ``cds``, ``mars``, ``ecmwf-open-data``, ``file``): ``earthkit.data.from_source``
  retrieves the data into earthkit's cache; its local files are then read like any other.

:func:`read_observation_file` and :func:`read_gridded_file` pick the reader by content: netCDF
(:func:`obscast.components.obs.readers.netcdf.is_netcdf`) or BUFR/GRIB.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from obscast.components.errors import InputError
from obscast.components.obs.readers.bufr import Window, read_observations
from obscast.components.obs.readers.netcdf import is_netcdf, read_netcdf_gridded, read_netcdf_points

__all__ = [
    "cache_dir",
    "earthkit_paths",
    "observation_reader",
    "read_gridded_file",
    "read_observation_file",
    "s3_files",
    "source_paths",
]


def cache_dir() -> Path:
    """Local folder of the fetched S3 objects (``$OBSCAST_RAW_CACHE`` or ``<tmp>/obscast-raw``)."""
    return Path(os.environ.get("OBSCAST_RAW_CACHE") or Path(tempfile.gettempdir()) / "obscast-raw")


def _s3_fs(store: Any) -> Any:
    """The s3fs filesystem: the store's when it is on S3, else one with the store's options."""
    if str(store.root).startswith("s3://"):
        return store.fs
    from obscast.components.store.storage import Store

    return Store("s3://placeholder", store.storage_options).fs


def _local_copy(fs: Any, key: str) -> str:
    """Fetch ``bucket/key`` into the cache unless a copy of this version is there; its path."""
    info = fs.info(key)
    version = str(info.get("ETag") or info.get("etag") or "").strip('"')
    if not version:
        modified = info.get("LastModified") or info.get("mtime") or ""
        version = f"{info.get('size')}-{pd.Timestamp(modified).value if modified else 0}"
    name = Path(key).name
    target = cache_dir() / hashlib.sha256(key.encode()).hexdigest()[:16] / f"{version}-{name}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + f".{os.getpid()}.part")
        fs.get(key, str(tmp))
        os.replace(tmp, target)
    return str(target)


def s3_files(pattern: str, store: Any) -> list[str]:
    """Local copies of the S3 objects of ``pattern`` (sorted by key).

    Parameters
    ----------
    pattern : str
        ``s3://bucket/prefix/*.bufr`` (glob characters allowed in the key) or ``store:raw/...``
        inside a store on S3.
    store : Store
        The configuration's store (its S3 filesystem and ``storage_options``).

    Returns
    -------
    list of str
        Cached local files, one per object (see the module docstring).

    Raises
    ------
    InputError
        Field ``'paths'``: the pattern matches no object, or a plain key does not exist.
    """
    fs = _s3_fs(store)
    url = store.url(pattern.removeprefix("store:")) if pattern.startswith("store:") else pattern
    key = url.removeprefix("s3://")
    if any(ch in key for ch in "*?["):
        keys = sorted(fs.glob(key))
        keys = [k for k in keys if fnmatch.fnmatch(k, key)]
        if not keys:
            raise InputError(pattern, "paths", "at least one S3 object matching the pattern", "none")
    else:
        if not fs.exists(key):
            raise InputError(pattern, "paths", "an existing S3 object", "no such object")
        keys = [key]
    return [_local_copy(fs, k) for k in keys]


def _local_paths(data: Any) -> list[str]:
    """Local files behind an earthkit-data source or reader."""
    path = getattr(data, "path", None)
    if isinstance(path, (list, tuple)):
        return [str(p) for p in path]
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        return sorted(str(f) for f in p.rglob("*") if f.is_file()) if p.is_dir() else [str(p)]
    parts = getattr(data, "sources", None) or getattr(data, "_indexes", None)
    if parts:
        return [f for part in parts for f in _local_paths(part)]
    return []


def earthkit_paths(spec: Any) -> list[str]:
    """Retrieve an earthkit-data source and return its local files.

    Parameters
    ----------
    spec : EarthkitSource
        ``source`` (``url``, ``cds``, ``mars``, ``ecmwf-open-data``, ``file``), ``args`` and
        ``kwargs`` of ``earthkit.data.from_source(source, *args, **kwargs)``
        (:class:`obscast.components.config.EarthkitSource`).

    Returns
    -------
    list of str
        The local (cached) files, sorted.

    Raises
    ------
    InputError
        Field ``'earthkit'``: the retrieval fails (network, credentials, request) or yields no
        local file. One line naming the source.
    """
    import earthkit.data as ekd

    label = f"earthkit {spec.source} {list(spec.args)}"
    try:
        data = ekd.from_source(spec.source, *spec.args, **dict(spec.kwargs))
    except Exception as exc:  # network, credentials, bad request: the library's own classes
        raise InputError(label, "earthkit", "a source earthkit-data can retrieve", found=f"{type(exc).__name__}: {exc}") from exc
    files = sorted(_local_paths(data))
    if not files:
        raise InputError(label, "earthkit", "a source with local files", found=f"{type(data).__name__} without a path")
    return files


def source_paths(entry: Any, store: Any) -> list[str]:
    """Local files of a source or gridded dataset of the configuration.

    Parameters
    ----------
    entry : SourceConfig or GriddedConfig
        Its ``paths`` (local paths and globs, ``store:`` paths, ``s3://`` globs) and optional
        ``earthkit`` source.
    store : Store
        The configuration's store.

    Returns
    -------
    list of str
        The earthkit files first, then the files of ``paths`` in order (globs sorted).

    Raises
    ------
    InputError
        A pattern matches nothing, or the earthkit retrieval fails.
    """
    from obscast.components.store.storage import expand_paths

    out = earthkit_paths(entry.earthkit) if getattr(entry, "earthkit", None) is not None else []
    return out + (expand_paths(list(entry.paths), store) if entry.paths else [])  # S3 objects: s3_files


def read_observation_file(kind: str, path: str | os.PathLike[str], window: Window = None, *, netcdf: Any = None) -> pd.DataFrame:
    """Observation table of one file: netCDF (CF or through ``netcdf``, a :class:`NetcdfMapping`)
    or BUFR (:func:`obscast.components.obs.readers.bufr.read_observations`). Errors: those of the
    reader."""
    if is_netcdf(path):
        return read_netcdf_points(path, kind, window, mapping=netcdf)
    return read_observations(kind, path, window)


def observation_reader(netcdf: Any = None) -> Callable[..., pd.DataFrame]:
    """``reader(kind, path, window)`` of :func:`read_observation_file` with a source's mapping."""

    def reader(kind: str, path: str | os.PathLike[str], window: Window = None) -> pd.DataFrame:
        return read_observation_file(kind, path, window, netcdf=netcdf)

    return reader


def read_gridded_file(path: str | os.PathLike[str], netcdf: Any = None, window: Window = None):
    """Gridded dataset of one file: netCDF (with the dataset's ``netcdf`` overrides) or GRIB
    (:func:`obscast.components.obs.readers.grib.read_grib`)."""
    if is_netcdf(path):
        return read_netcdf_gridded(path, netcdf, window)
    from obscast.components.obs.readers.grib import read_grib

    return read_grib(path, window)
