"""A catalogue of raw observation files: the time range each file covers, cached in the store.

A backfill cuts a time range into windows ``(end - Δ, end]`` and gives each window only the raw
files whose observations fall in it. Which files those are is known only after decoding them,
so every file is scanned once (decoded with its reader) and its time range recorded in
``catalogue/<source>.json`` in the store, keyed by the file's path and checked against its
size and modification time (nanoseconds): a file that changes is scanned again, one that does
not is never decoded for the catalogue again.

Entry of a file (all JSON)::

    {"path": "/data/raw/synop/20000101.bufr", "kind": "synop", "size": 123456,
     "mtime_ns": 1700000000000000000, "rows": 29878, "undated": 0,
     "time_min": "2000-01-01 00:00:00", "time_max": "2000-01-01 18:00:00"}

``rows`` counts the observation-table rows of the file, ``undated`` those without a valid time
(they belong to no window: the ingest flow quarantines them), ``time_min``/``time_max`` are the
first and last valid times (None when the file has no dated row).

The catalogue is updated under the lock ``catalogue/<source>.json.lock``
(:func:`obscast.components.store.locking.store_lock`), merging entries, so concurrent backfills keep each
other's scans.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from obscast.components.store.locking import store_lock
from obscast.components.store.storage import Store

__all__ = ["FileCatalogue", "file_fingerprint", "scan_file"]


def file_fingerprint(path: str) -> dict[str, Any]:
    """``{"path", "size", "mtime_ns"}`` of a local file.

    Raises
    ------
    InputError
        If the file does not exist (field ``'file'``).
    """
    from obscast.components.errors import InputError

    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise InputError(path, "file", "an existing observation file", "no such file") from exc
    return {"path": os.fspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def scan_file(kind: str, path: str) -> dict[str, Any]:
    """Decode one raw file and return its catalogue entry (see the module docstring).

    Parameters
    ----------
    kind : {"synop", "temp", "aircraft", "satellite"}
        WMO observation type (chooses the BUFR reader).
    path : str
        Local BUFR file.

    Raises
    ------
    InputError
        Missing, truncated or undecodable file (from the reader).
    """
    from obscast.components.obs.readers.bufr import read_observations

    fingerprint = file_fingerprint(path)
    table = read_observations(kind, path)
    times = table["time"].dropna()
    return {
        **fingerprint,
        "kind": kind,
        "rows": int(len(table)),
        "undated": int(len(table) - len(times)),
        "time_min": None if times.empty else str(times.min()),
        "time_max": None if times.empty else str(times.max()),
    }


class FileCatalogue:
    """The cached time ranges of one source's raw files.

    Parameters
    ----------
    store : Store
        Where the catalogue lives (``catalogue/<source>.json``).
    source : str
        Source name of the configuration (``sources.<name>``).
    kind : str
        Its WMO observation type; an entry scanned with another kind is not reused.
    """

    def __init__(self, store: Store, source: str, kind: str):
        self.store, self.source, self.kind = store, source, kind
        self.path = f"catalogue/{source}.json"

    def entries(self) -> dict[str, dict[str, Any]]:
        """All stored entries by path (including files no longer configured)."""
        if not self.store.exists(self.path):
            return {}
        return dict(self.store.read_json(self.path)["files"])

    def _current(self, entry: dict[str, Any] | None, fingerprint: dict[str, Any]) -> bool:
        return (entry is not None and entry.get("kind") == self.kind and entry.get("size") == fingerprint["size"]
                and entry.get("mtime_ns") == fingerprint["mtime_ns"])

    def unscanned(self, paths: list[str]) -> list[str]:
        """The files among ``paths`` that are new or changed since their scan (in the given order).

        Raises
        ------
        InputError
            If a file does not exist.
        """
        known = self.entries()
        return [p for p in paths if not self._current(known.get(p), file_fingerprint(p))]

    def update(self, scanned: list[dict[str, Any]]) -> None:
        """Merge new entries (from :func:`scan_file`) into the stored catalogue, under its lock."""
        if not scanned:
            return
        with store_lock(self.store, self.path + ".lock"):
            files = self.entries()
            files.update({e["path"]: e for e in scanned})
            self.store.write_json({"source": self.source, "files": files}, self.path)

    def lookup(self, paths: list[str]) -> list[dict[str, Any]]:
        """The current entries of ``paths``, in order.

        Raises
        ------
        KeyError
            If a file has no current entry (scan it and :meth:`update` first).
        """
        known = self.entries()
        out = []
        for p in paths:
            entry = known.get(p)
            if not self._current(entry, file_fingerprint(p)):
                raise KeyError(f"{p}: not in the catalogue {self.store.url(self.path)} or changed since its scan")
            out.append(entry)
        return out


def overlapping(entries: list[dict[str, Any]], start: pd.Timestamp, end: pd.Timestamp) -> list[str]:
    """Paths of the files with observations in the window ``(start, end]``, in the entries' order."""
    out = []
    for e in entries:
        if e["time_min"] is None:
            continue
        if pd.Timestamp(e["time_min"]) <= end and pd.Timestamp(e["time_max"]) > start:
            out.append(e["path"])
    return out
