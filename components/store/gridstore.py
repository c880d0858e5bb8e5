"""Gridded datasets in the store: ``gridded/<dataset>.zarr``, written idempotently.

Chunks hold one time step of one member with all levels (``(1, 1, level, latitude, longitude)``)
so that a training read of one sample touches one chunk per variable. The dataset's digest is
written into its attributes last: a store with the same digest is complete and is left as it is.
"""

from __future__ import annotations

import hashlib

import numpy as np
import xarray as xr

from obscast.components.errors import ObscastError
from obscast.components.store.storage import Store

DIGEST_KEY = "obscast_digest"


def dataset_digest(ds: xr.Dataset) -> str:
    """SHA-256 over the names, dims and values of all variables and coordinates."""
    h = hashlib.sha256()
    for name in sorted(map(str, ds.variables)):
        var = ds[name]
        h.update(f"{name}{var.dims}{var.dtype}".encode())
        h.update(np.ascontiguousarray(var.values).tobytes())
    return h.hexdigest()


def write_gridded(store: Store, name: str, ds: xr.Dataset) -> tuple[str, str]:
    """Write a gridded dataset unless an identical one is stored.

    Parameters
    ----------
    store : Store
    name : str
        Dataset name; the path is ``gridded/<name>.zarr``.
    ds : xarray.Dataset
        Dims ``(member, time, level, latitude, longitude)`` (as from the GRIB reader).

    Returns
    -------
    (url, status)
        ``status`` is ``"written"`` or ``"unchanged"``.

    Raises
    ------
    ObscastError
        If a different, complete dataset of that name is stored already (it is never overwritten:
        ingest into a new name, or delete the old one deliberately).
    """
    path = f"gridded/{name}.zarr"
    digest = dataset_digest(ds)
    if store.exists(path, "zarr.json"):
        stored = store.open_dataset(path).attrs.get(DIGEST_KEY)
        if stored == digest:
            return store.url(path), "unchanged"
        if stored is not None:
            raise ObscastError(
                f"{store.url(path)}: a different dataset is stored under this name; nothing was changed "
                "(ingest into another dataset name or remove the old one first)"
            )
    out = ds.copy()
    out.attrs.pop(DIGEST_KEY, None)
    encoding = {}
    for var in out.data_vars:
        chunks = tuple(out.sizes[d] if d in ("level", "latitude", "longitude") else 1 for d in out[var].dims)
        encoding[var] = {"chunks": chunks}
    store.write_dataset(out, path, mode="w", encoding=encoding)
    import zarr

    group = zarr.open_group(store.zarr_store(path), mode="r+", zarr_format=3)
    group.attrs[DIGEST_KEY] = digest
    return store.url(path), "written"


def open_gridded(store: Store, name: str) -> xr.Dataset:
    """Open ``gridded/<name>.zarr``.

    Raises
    ------
    ObscastError
        If it is missing or incomplete (run ``obscast ingest`` first).
    """
    path = f"gridded/{name}.zarr"
    if not store.exists(path, "zarr.json"):
        raise ObscastError(f"{store.url(path)}: gridded dataset not found (run `obscast ingest` first)")
    ds = store.open_dataset(path)
    if DIGEST_KEY not in ds.attrs:
        raise ObscastError(f"{store.url(path)}: gridded dataset is incomplete (an interrupted ingest); run `obscast ingest` again")
    return ds
