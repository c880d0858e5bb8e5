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

Bad files
---------
A raw feed always holds some file that cannot be decoded (empty, truncated, corrupt, or not of
the source's kind). :func:`read_tolerant` reads a source's files one by one and *quarantines
such a file whole*, with its reason, instead of failing: the other files are read and
ingested. The files quarantined are recorded in ``quarantine/<source>.files.json``
(:func:`record_bad_files`). ``strict=True`` restores fail-fast (``obscast ingest --strict``).
A missing file is not a bad file but a configuration error, and a source none of whose files
can be read fails too (nothing of it could be ingested: most likely a wrong path or kind).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pandas as pd

from obscast.components.errors import InputError

from obscast.components.store.locking import store_lock
from obscast.components.store.storage import Store

__all__ = ["BAD_FILES_PATH", "FileCatalogue", "file_entry", "file_fingerprint", "read_tolerant", "record_bad_files", "scan_file"]

LOG = logging.getLogger(__name__)

#: Store path of the record of a source's files quarantined whole (``{source}`` is filled in).
BAD_FILES_PATH = "quarantine/{source}.files.json"

# InputError fields that are not a bad file: a missing file or an unknown kind are configuration errors.
_NOT_BAD_FILE = ("file", "kind")


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
    return file_entry(kind, fingerprint, read_observations(kind, path))


def file_entry(kind: str, fingerprint: dict[str, Any], table: pd.DataFrame) -> dict[str, Any]:
    """The catalogue entry of a file from its :func:`file_fingerprint` (taken before decoding)
    and its whole observation table (for callers that decode the file anyway: see :func:`scan_file`)."""
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


def read_tolerant(kind: str, paths: list[str], window: Any = None, *, strict: bool = False,
                  reader: Any = None) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Read a source's files into one observation table, quarantining the files that cannot be read.

    Parameters
    ----------
    kind : str
        Observation kind, passed to the reader.
    paths : list of str
        The source's files, read in this order.
    window : None or (start, end), optional
        Passed to the reader (rows with ``start < time <= end``).
    strict : bool, optional
        Fail on the first bad file (``obscast ingest --strict``) instead of quarantining it.
    reader : callable, optional
        ``reader(kind, path, window) -> DataFrame``; default
        :func:`obscast.components.obs.readers.bufr.read_observations`.

    Returns
    -------
    table : pandas.DataFrame
        The good files' observation tables concatenated in the order of ``paths`` (fresh
        ``RangeIndex``), shape (n_rows, n_columns).
    bad : list of dict
        One ``{"path", "field", "reason"}`` per file quarantined whole, in the order of
        ``paths``: ``reason`` is the reader's one-line error (e.g. ``"...: field 'BUFR message':
        expected a complete BUFR message, found end of file inside a message (truncated)"``).

    Raises
    ------
    InputError
        A missing file or an unknown kind (configuration errors, never quarantined); with
        ``strict``, the first bad file's error; the first bad file's error also when no file of
        the source could be read.
    ValueError
        If ``paths`` is empty.
    """
    if not paths:
        raise ValueError(f"no files to read for kind {kind!r}")
    if reader is None:
        from obscast.components.obs.readers.bufr import read_observations as reader
    tables: list[pd.DataFrame] = []
    bad: list[dict[str, str]] = []
    first: InputError | None = None
    for path in paths:
        try:
            tables.append(reader(kind, path, window))
        except InputError as exc:
            if strict or exc.field in _NOT_BAD_FILE:
                raise
            first = first or exc
            bad.append({"path": os.fspath(path), "field": str(exc.field), "reason": str(exc)})
            LOG.warning("quarantined the whole file %s: %s", path, exc)
    if not tables:
        assert first is not None
        raise first
    table = pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]
    return table, bad


def record_bad_files(store: Store, source: str, bad: list[dict[str, str]], read: list[str]) -> str:
    """Record the files of ``source`` quarantined whole in ``quarantine/<source>.files.json``.

    The record maps each quarantined path to its ``{"field", "reason"}``; the files of ``read``
    that were read fine this time are removed from it (a file replaced by a good copy). Updated
    under the lock ``quarantine/<source>.files.json.lock``.

    Parameters
    ----------
    store : Store
        The store.
    source : str
        Source name.
    bad : list of dict
        From :func:`read_tolerant`.
    read : list of str
        Every path of this read, bad ones included.

    Returns
    -------
    str
        The record's URL.
    """
    path = BAD_FILES_PATH.format(source=source)
    bad_paths = {b["path"] for b in bad}
    with store_lock(store, path + ".lock"):
        files = dict(store.read_json(path)["files"]) if store.exists(path) else {}
        if not bad and not files:
            return store.url(path)
        for p in read:
            if os.fspath(p) not in bad_paths:
                files.pop(os.fspath(p), None)
        files.update({b["path"]: {"field": b["field"], "reason": b["reason"]} for b in bad})
        store.write_json({"source": source, "files": files}, path)
    return store.url(path)
