"""The obscast store: one URL (a local directory or ``s3://bucket/prefix``) holding everything.

Layout (docs/architecture.md)::

    gridded/<dataset>.zarr
    obs/<source>.zarr            quarantine/<source>.zarr
    models/<name>/<version>/     checkpoint.pt + metadata.json
    forecasts/<name>/<version>/<init>.zarr  and  <init>.stations.zarr
    scores/<name>/<version>/     scores.zarr, scores.md, rmse.png

Every path goes through fsspec, so s3fs serves ``s3://`` URLs with the same code as local disk.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec
import xarray as xr


class Store:
    """A store rooted at a URL.

    Parameters
    ----------
    url : str
        Local directory (created on first write) or ``s3://bucket/prefix``.
    storage_options : dict, optional
        Passed to fsspec (for s3fs: ``endpoint_url``, ``key``, ``secret``...). Never logged.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        self.root = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        s3_opts = dict(self.storage_options)
        if self.root.startswith("s3://") and "endpoint_url" in s3_opts:
            s3_opts.setdefault("client_kwargs", {})
            s3_opts["client_kwargs"] = {**s3_opts["client_kwargs"], "endpoint_url": s3_opts.pop("endpoint_url")}
        self._fs_options = s3_opts
        self.fs, self._root_path = fsspec.core.url_to_fs(self.root, **s3_opts)
        self.is_local = self.fs.protocol in ("file", ("file", "local"), "local") or "file" in self.fs.protocol

    def __repr__(self) -> str:
        return f"Store({self.root!r})"

    # paths -----------------------------------------------------------------
    def url(self, *parts: str) -> str:
        """Full URL of a path inside the store (what users are shown)."""
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def _path(self, *parts: str) -> str:
        return "/".join([self._root_path.rstrip("/"), *[p.strip("/") for p in parts if p]])

    def exists(self, *parts: str) -> bool:
        return self.fs.exists(self._path(*parts))

    def listdir(self, *parts: str) -> list[str]:
        """Names (not paths) directly below a folder; empty if it does not exist."""
        path = self._path(*parts)
        if not self.fs.exists(path):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False))

    def rm(self, *parts: str) -> None:
        path = self._path(*parts)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)

    # bytes and JSON -------------------------------------------------------------
    def write_bytes(self, data: bytes, *parts: str) -> str:
        """Write a small object; on local disk through a temporary name and a rename (atomic)."""
        path = self._path(*parts)
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if self.is_local:
            tmp = path + ".tmp"
            with self.fs.open(tmp, "wb") as f:
                f.write(data)
            self.fs.mv(tmp, path)
        else:  # an S3 PUT is atomic for the object
            with self.fs.open(path, "wb") as f:
                f.write(data)
        return self.url(*parts)

    def read_bytes(self, *parts: str) -> bytes:
        """The whole object in one request (on S3 one GET: an object replaced meanwhile is read
        whole, old or new, never a stale-ETag error between a HEAD and a ranged GET)."""
        return self.fs.cat_file(self._path(*parts))

    def write_json(self, obj: Any, *parts: str) -> str:
        return self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), *parts)

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    # zarr -----------------------------------------------------------------------
    def zarr_store(self, *parts: str):
        """A zarr v3 store object for a path (``zarr.storage.FsspecStore`` or ``LocalStore``)."""
        import zarr.storage

        path = self._path(*parts)
        if self.is_local:
            return zarr.storage.LocalStore(path)
        return zarr.storage.FsspecStore.from_url(self.url(*parts), storage_options=self._fs_options)

    def open_dataset(self, *parts: str) -> xr.Dataset:
        """Open a zarr dataset lazily (dask-free: backed by zarr arrays)."""
        return xr.open_zarr(self.zarr_store(*parts), consolidated=False, chunks=None)

    def write_dataset(self, ds: xr.Dataset, *parts: str, **kwargs: Any) -> str:
        """Write a dataset as zarr v3 (``mode='w'`` unless given)."""
        kwargs.setdefault("mode", "w")
        ds.to_zarr(self.zarr_store(*parts), consolidated=False, zarr_format=3, **kwargs)
        return self.url(*parts)



def expand_paths(patterns: list[str], store: Store) -> list[str]:
    """Expand a source's file list: glob patterns, and ``store:<path>`` inside the store.

    Plain paths are returned as they are (a missing file is reported by its reader). ``s3://``
    patterns, and ``store:`` paths of a store on S3, are fetched into a local cache
    (:func:`obscast.components.obs.readers.access.s3_files`) and their cached copies returned.

    Raises
    ------
    InputError
        If a pattern matches no file or object.
    """
    import glob

    from obscast.components.errors import InputError

    out: list[str] = []
    for pattern in patterns:
        if pattern.startswith("s3://") or (pattern.startswith("store:") and not store.is_local):
            from obscast.components.obs.readers.access import s3_files

            out.extend(s3_files(pattern, store))
            continue
        path = pattern
        if pattern.startswith("store:"):
            if not store.is_local:
                raise InputError(pattern, "paths", "store: paths inside a local store (raw files are read from local disk)", store.root)
            path = store._path(pattern.removeprefix("store:"))
        if any(ch in path for ch in "*?["):
            matches = sorted(glob.glob(path))
            if not matches:
                raise InputError(pattern, "paths", "at least one file matching the pattern", "none")
            out.extend(matches)
        else:
            out.append(path)
    return out
