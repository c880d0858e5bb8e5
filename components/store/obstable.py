"""Observation tables in zarr, appended window by window (docs/architecture.md).

A table is a zarr group with one 1-D array per column along the dimension ``row`` (chunked by
rows) and, beside it, a window index ``<table>.index.json``: for each ingested window
``(end - Δ, end]`` its first row, its row count, its time range and a digest of its content. The
index is the commit record: it is replaced (one atomic object write) only after the window's rows
are written, so rows beyond the indexed count are leftovers of an interrupted write and are cut
off before the next append. It is a separate object, not the group's attributes, because an
xarray append rewrites the group's attributes. Appenders take the table's lock ``<table>.lock``
(see :mod:`obscast.components.store.locking`), so several processes (two backfills, an ingest and a backfill)
can write to one table at once without corrupting it.

Within a window rows are sorted by time; windows lie in the order they were ingested, and the
index lets a reader fetch a time range as a few contiguous row slices, all columns of a row
block at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from obscast.components.errors import ObscastError
from obscast.components.store.storage import Store



class WindowConflictError(ObscastError):
    """A window is already stored with different content."""


def window_key(end: pd.Timestamp | None) -> str:
    """The index key of a window: its end time in ISO 8601, or ``"undated"`` for rows without time."""
    return "undated" if end is None or pd.isna(end) else pd.Timestamp(end).strftime("%Y-%m-%dT%H:%M:%S")


def split_windows(table: pd.DataFrame, window: pd.Timedelta) -> dict[str, pd.DataFrame]:
    """Cut a table into windows ``(end - window, end]`` aligned on multiples of ``window``.

    Parameters
    ----------
    table : pandas.DataFrame
        An observation table with a ``time`` column (datetime64[ns]); NaT rows go to ``"undated"``.
    window : pandas.Timedelta
        Window length, e.g. 6 h.

    Returns
    -------
    dict
        Window key (see :func:`window_key`) to the rows of that window, stably sorted by time.
    """
    ends = table["time"].dt.ceil(window)
    out: dict[str, pd.DataFrame] = {}
    for end, rows in table.groupby(ends, dropna=False, sort=True):
        out[window_key(end)] = rows.sort_values("time", kind="stable").reset_index(drop=True)
    return out


def _strings(col: pd.Series) -> list[str]:
    """A text column's values as ``str``: ``""`` where missing (``pd.isna``), ``str(v)`` elsewhere
    (missing values found in one vectorised pass)."""
    values = col.to_numpy(dtype=object)
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()
        values[missing] = ""
    return [v if type(v) is str else str(v) for v in values]


def table_digest(table: pd.DataFrame) -> str:
    """SHA-256 of a table's columns, names and values (row order matters)."""
    h = hashlib.sha256()
    for name in table.columns:
        h.update(name.encode())
        col = table[name]
        if col.dtype == object or str(col.dtype).startswith(("string", "str")):
            h.update("\x1f".join(_strings(col)).encode())
        else:
            h.update(np.ascontiguousarray(col.to_numpy()).tobytes())
    return h.hexdigest()


@dataclass
class WriteResult:
    """Outcome of writing one window: ``status`` is ``"written"`` or ``"unchanged"``."""

    window: str
    status: str
    rows: int


class ObsTable:
    """One observation (or quarantine) table in the store.

    Parameters
    ----------
    store : Store
    path : str
        Path inside the store, e.g. ``"obs/synop.zarr"``.
    row_chunk : int
        Rows per zarr chunk, fixed when the table is created.
    """

    def __init__(self, store: Store, path: str, row_chunk: int = 65536):
        self.store = store
        self.path = path
        self.row_chunk = row_chunk

    @property
    def index_path(self) -> str:
        """The window index object, beside the zarr group (``obs/synop.zarr.index.json``)."""
        return self.path + ".index.json"

    @property
    def url(self) -> str:
        return self.store.url(self.path)

    def _group(self, mode: str = "r"):
        return zarr.open_group(self.store.zarr_store(self.path), mode=mode, zarr_format=3)

    def index(self) -> dict[str, dict]:
        """The window index: key -> ``{"row_start", "rows", "digest", "time_min", "time_max"}``."""
        if not self.store.exists(self.index_path):
            return {}
        return dict(self.store.read_json(self.index_path)["windows"])

    def columns(self) -> list[str]:
        """Column names in their original order."""
        return list(self.store.read_json(self.index_path)["columns"])

    def __len__(self) -> int:
        return sum(w["rows"] for w in self.index().values())

    def write_window(self, key: str, rows: pd.DataFrame) -> WriteResult:
        """Store one window's rows idempotently (see :meth:`write_windows`)."""
        return self.write_windows({key: rows})[0]

    def write_windows(self, windows: dict[str, pd.DataFrame]) -> list[WriteResult]:
        """Store several windows' rows, idempotently, in one append.

        A window already stored with the same digest is left as it is (``"unchanged"``). Rows
        left beyond the index by an interrupted write are cut off first; then the new windows'
        rows are appended (in the order given) and only then recorded in the index.

        Safe with concurrent writers (threads, processes, hosts): the cut-off, the append and
        the index update happen under the table's lock ``<table>.lock``
        (:func:`obscast.components.store.locking.store_lock`), after the index is read again. When every
        window is stored already nothing is locked or written.

        Raises
        ------
        WindowConflictError
            If a window is stored already with different content (nothing is changed).
        LockTimeout
            If another writer holds the table's lock for more than 10 minutes.
        """
        prepared = [(key, rows.reset_index(drop=True)) for key, rows in windows.items()]
        digests = [table_digest(rows) for _, rows in prepared]
        results, new = self._plan(prepared, digests, self.index())
        if not new:
            return results
        from obscast.components.store.locking import store_lock

        with store_lock(self.store, self.path + ".lock"):
            index = self.index()  # another writer may have committed windows meanwhile
            results, new = self._plan(prepared, digests, index)
            if new:
                self._append(index, new)
        return results

    def _plan(self, prepared, digests, index) -> tuple[list[WriteResult], list[tuple[str, pd.DataFrame, str]]]:
        """Which windows are new; raises WindowConflictError for a stored window with other content."""
        results: list[WriteResult] = []
        new: list[tuple[str, pd.DataFrame, str]] = []
        for (key, rows), digest in zip(prepared, digests):
            if key in index:
                if index[key]["digest"] != digest:
                    raise WindowConflictError(
                        f"{self.url}: window {key} is stored already with different content "
                        f"({index[key]['rows']} rows stored, {len(rows)} offered); nothing was changed"
                    )
                results.append(WriteResult(key, "unchanged", len(rows)))
            else:
                new.append((key, rows, digest))
                results.append(WriteResult(key, "written", len(rows)))
        return results, new

    def _append(self, index: dict[str, dict], new: list[tuple[str, pd.DataFrame, str]]) -> None:
        """Cut off uncommitted rows, append the new windows, then replace the index (under the lock)."""
        committed = sum(w["rows"] for w in index.values())
        block = pd.concat([rows for _, rows, _ in new], ignore_index=True)
        ds = _to_dataset(block)
        if committed == 0:
            encoding = {name: {"chunks": (self.row_chunk,)} for name in ds.data_vars}
            for name in ds.data_vars:
                if ds[name].dtype.kind == "M":  # exact integer times, whatever the first window holds
                    encoding[name].update(units="milliseconds since 1970-01-01T00:00:00", dtype="int64", calendar="proleptic_gregorian")
            self.store.write_dataset(ds, self.path, mode="w", encoding=encoding)
        else:
            self._truncate(committed)
            stored = self._group()
            mismatch = set(stored.array_keys()) ^ set(ds.data_vars)
            if mismatch:
                raise ObscastError(f"{self.url}: columns {sorted(mismatch)} do not match the table's")
            for name in ds.data_vars:
                if ds[name].dtype.kind not in "OM" and stored[name].dtype != ds[name].dtype:
                    ds[name] = ds[name].astype(stored[name].dtype)
            ds.to_zarr(self.store.zarr_store(self.path), append_dim="row", consolidated=False, zarr_format=3)
        row = committed
        for key, rows, digest in new:
            times = rows["time"].dropna()
            index[key] = {
                "row_start": row,
                "rows": len(rows),
                "digest": digest,
                "time_min": None if times.empty else str(times.min()),
                "time_max": None if times.empty else str(times.max()),
            }
            row += len(rows)
        self.store.write_json({"columns": list(block.columns), "windows": index}, self.index_path)

    def _truncate(self, n_rows: int) -> None:
        group = self._group(mode="r+")
        for name in group.array_keys():
            if group[name].shape[0] != n_rows:
                group[name].resize((n_rows,))

    def read(self, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> pd.DataFrame:
        """Rows with ``start < time <= end`` (all rows when both are None), sorted by time.

        Only the windows overlapping the interval are read, each as one contiguous row slice
        with all its columns.
        """
        index = self.index()
        if not index:
            return pd.DataFrame()
        lo = None if start is None else pd.Timestamp(start)
        hi = None if end is None else pd.Timestamp(end)
        slices = []
        for w in index.values():
            if w["rows"] == 0:
                continue
            if w["time_min"] is not None:
                if hi is not None and pd.Timestamp(w["time_min"]) > hi:
                    continue
                if lo is not None and pd.Timestamp(w["time_max"]) <= lo:
                    continue
            elif lo is not None or hi is not None:
                continue
            slices.append((w["row_start"], w["row_start"] + w["rows"]))
        if not slices:
            return pd.DataFrame()
        ds = self.store.open_dataset(self.path)
        columns = self.columns()
        merged: list[list[int]] = []
        for a, b in sorted(slices):  # adjacent windows are read as one slice
            if merged and merged[-1][1] == a:
                merged[-1][1] = b
            else:
                merged.append([a, b])
        parts = [_from_dataset(ds.isel(row=slice(a, b)).load())[columns] for a, b in merged]
        table = pd.concat(parts, ignore_index=True)
        keep = np.ones(len(table), bool)
        if lo is not None:
            keep &= (table["time"] > lo).to_numpy()
        if hi is not None:
            keep &= (table["time"] <= hi).to_numpy()
        return table[keep].sort_values("time", kind="stable").reset_index(drop=True)


def _to_dataset(rows: pd.DataFrame) -> xr.Dataset:
    data = {}
    for name in rows.columns:
        col = rows[name]
        if col.dtype == object or str(col.dtype).startswith(("string", "str")):
            values = np.array(_strings(col), dtype=object)
        else:
            values = col.to_numpy()
        data[name] = ("row", values)
    return xr.Dataset(data)


def _from_dataset(ds: xr.Dataset) -> pd.DataFrame:
    out = {}
    for name in ds.data_vars:
        values = ds[name].values
        if values.dtype.kind in ("T", "U", "O"):
            values = values.astype(object)
        out[name] = values
    return pd.DataFrame(out)
