"""Backfill flow: ingest one observation source over a time range, window by window.

``obscast backfill --source synop --start 2000-01-01 --end 2000-01-09 [--workers 2]`` (or this
flow with the same parameters from the Prefect UI) cuts the range into the windows
``(end - Δ, end]`` of ``ingest.window`` that overlap ``(start, end]`` (whole windows: a window
is the unit that is committed), then for each window

1. skips it when the ``obs/<source>.zarr`` window index has it already (``"skipped"``);
2. otherwise gives it only the raw files whose observations fall in it, known from the file
   catalogue (:mod:`obscast.components.store.catalogue`: every file is decoded once for its time range,
   cached in the store under ``catalogue/<source>.json`` by path, size and mtime); a window
   that no file covers is ``"empty"``;
3. reads those files keeping the rows in the window and QCs each window on its own, in tasks
   (``read-windows``) of up to ``windows_per_task`` consecutive windows (default 4, so that a
   daily file is decoded once for its four 6-hour windows); several tasks run at once on the
   task runner: with ``workers=1`` a single thread, with ``workers=N > 1`` a local Dask cluster
   of ``N`` worker processes (prefect-dask); at most ``2 * workers`` tasks are in flight;
4. commits windows from the flow process, **one writer, in chronological order**: their
   quarantined rows, then their accepted rows (:func:`obscast.flows.ingest.write_observation_windows`),
   several windows per append (about ``ingest.row_chunk`` rows, or what was read in the last
   10 s), so that the table's last chunk is rewritten once per chunk rather than once per
   window. Status ``"written"``, or ``"unchanged"`` when an identical window is stored already.
   Writers in other processes (a second backfill, an ingest) are kept apart by the table's
   lock (:meth:`obscast.components.store.obstable.ObsTable.write_windows`), so two backfills over
   overlapping ranges at once store each window once.

Because windows are committed in time order and each commit is atomic (rows first, then the
index), a run killed at any point and run again gives the same store as an uninterrupted run.
The first window that fails ends the backfill: later windows are ``"not run"`` and the flow
fails with that window's error; run it again to resume.

Per-window statuses are returned, logged as progress lines ``windows done / total`` and
published as the markdown artifact ``backfill-<source>``.
"""

from __future__ import annotations

import re
import time
from collections import deque
from datetime import datetime
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from obscast.components.store.catalogue import FileCatalogue, overlapping, scan_file
from obscast.components.config import Config
from obscast.components.errors import ConfigError, ObscastError
from obscast.components.store.obstable import ObsTable, split_windows, window_key
from obscast.components.obs.qc import apply_qc
from obscast.components.store.storage import expand_paths
from obscast.flows.common import load, store_of, task
from obscast.flows.ingest import read_files, write_observation_windows

STATUSES = ("written", "unchanged", "skipped", "empty", "failed", "not run")
COMMIT_INTERVAL = 10.0  # seconds: read windows wait at most about this long for their commit


def parse_time(value: str | datetime | pd.Timestamp, option: str) -> pd.Timestamp:
    """A UTC time from ISO 8601 (``2000-01-01``, ``2000-01-01T06:00``, ``...+02:00``).

    Raises
    ------
    ConfigError
        One line naming the option (``--start``/``--end``) and what was found.
    """
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        ts = pd.NaT
    if pd.isna(ts):
        raise ConfigError(f"{option}: expected a UTC time in ISO 8601, e.g. 2000-01-01T06:00, found {str(value)!r}")
    return ts.tz_convert("UTC").tz_localize(None) if ts.tzinfo is not None else ts


def window_ends(start: pd.Timestamp, end: pd.Timestamp, window: pd.Timedelta) -> list[pd.Timestamp]:
    """Ends of the windows ``(e - window, e]`` (aligned on multiples of ``window``) that overlap ``(start, end]``.

    Returns
    -------
    list of pandas.Timestamp
        Ascending; ``[]`` when ``end <= start``.
    """
    if end <= start:
        return []
    first = start.floor(window) + window
    return list(pd.date_range(first, end.ceil(window), freq=window))


def check_request(config: Config, source: str, start: Any, end: Any, workers: int = 1, config_path: str | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Validate a backfill request before anything runs.

    Returns
    -------
    (start, end) : pandas.Timestamp
        UTC, tz-naive.

    Raises
    ------
    ConfigError
        Unknown ``source`` (names the configured ones), a time that does not parse, ``end`` not
        after ``start``, ``workers`` < 1.
    """
    if source not in config.sources:
        where = config_path or "configs/default.yaml"
        raise ConfigError(f"--source: expected one of the sources of {where}: {sorted(config.sources)}, found {source!r}")
    t0, t1 = parse_time(start, "--start"), parse_time(end, "--end")
    if t1 <= t0:
        raise ConfigError(f"--end: expected a time after --start {t0.isoformat()}, found {t1.isoformat()}")
    if int(workers) < 1:
        raise ConfigError(f"--workers: expected 1 or more worker processes, found {workers}")
    return t0, t1


@task(name="scan-file")
def scan_file_task(kind: str, path: str) -> dict[str, Any]:
    """Catalogue entry of one raw file (see :func:`obscast.components.store.catalogue.scan_file`)."""
    return scan_file(kind, path)


@task(name="read-windows", task_run_name="read-windows-{name}-{first}-{last}")
def read_windows(name: str, kind: str, paths: list[str], keys: list[str], first: str, last: str, window: pd.Timedelta) -> dict[str, Any]:
    """Read consecutive windows: the rows of ``paths`` in ``(first - window, last]``, split into
    the windows ``keys`` and QC'd window by window.

    Returns
    -------
    dict
        Window key -> :class:`obscast.components.obs.qc.QCResult`, or None for a window without rows.
    """
    start, end = pd.Timestamp(first) - window, pd.Timestamp(last)
    parts = split_windows(read_files(kind, paths, (start, end)), window)
    return {key: apply_qc(parts[key], kind, source=name) if key in parts else None for key in keys}


@task(name="commit-windows", retries=2, retry_delay_seconds=[1, 5])
def commit_windows(config: Config, name: str, accepted: pd.DataFrame, rejected: pd.DataFrame) -> dict[str, str]:
    """Append consecutive windows' quarantined and accepted rows (one append per table).

    Returns
    -------
    dict
        Window key -> ``"written"`` (some rows were appended) or ``"unchanged"``.
    """
    statuses: dict[str, str] = {}
    for _, result in write_observation_windows(config, name, accepted, rejected):
        if statuses.get(result.window) != "written":
            statuses[result.window] = result.status
    return statuses


def _done(future) -> bool:
    return bool(future.wrapped_future.done())


def _task_runner(workers: int):
    if workers == 1:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None})


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _markdown(summary: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items() if v)
    lines = [f"## Backfill {summary['source']}", "",
             f"Range ({summary['start']}, {summary['end']}], windows of {summary['window']}, {summary['workers']} worker(s): {counts}.",
             f"Undated rows in the source's files (in no window; `obscast ingest` quarantines them): {summary['undated_rows']}.", "",
             "| window end | status | files | rows | accepted | rejected |", "|---|---|---|---|---|---|"]
    for key, w in summary["windows"].items():
        lines.append(f"| {key} | {w['status']} | {w['files']} | {w.get('rows', '')} | {w.get('accepted', '')} | {w.get('rejected', '')} |")
    return "\n".join(lines) + "\n"


@flow(name="backfill", log_prints=True)
def backfill_flow(source: str, start: str | datetime, end: str | datetime, config_path: str | None = None, store: str | None = None, workers: int = 1,
                  windows_per_task: int = 4) -> dict[str, Any]:
    """Ingest one source over ``(start, end]``, window by window, skipping complete windows.

    Parameters
    ----------
    source : str
        A source name of the configuration (``sources.<name>``).
    start, end : str or datetime
        UTC times, ISO 8601; every window ``(e - Δ, e]`` of ``ingest.window`` overlapping
        ``(start, end]`` is ingested whole.
    config_path : str, optional
        YAML configuration (the embedded default when None).
    store : str, optional
        Overrides the configuration's store URL.
    workers : int, optional
        1: windows are read one task at a time in a thread; N > 1: on a local Dask cluster of N
        worker processes.
    windows_per_task : int, optional
        Consecutive windows read by one task (their files are decoded once for all of them).

    Returns
    -------
    dict
        ``source``, ``start``, ``end``, ``window``, ``workers``, ``obs``/``quarantine``/
        ``catalogue`` URLs, ``files`` (count), ``scanned`` (files decoded for the catalogue in
        this run), ``undated_rows``, ``counts`` (windows per status of :data:`STATUSES`) and
        ``windows``: window key (end time) -> ``{"status", "files", "rows", "accepted",
        "rejected"}`` (the last three for windows that were read).

    Raises
    ------
    ConfigError
        Bad source, times or workers (see :func:`check_request`).
    InputError
        A configured file is missing or cannot be decoded (nothing is written).
    ObscastError
        A window failed; windows before it are committed, the rest are not run.
    """
    config = load(config_path, store)
    t0, t1 = check_request(config, source, start, end, workers, config_path)
    if int(windows_per_task) < 1:
        raise ConfigError(f"windows_per_task: expected 1 or more, found {windows_per_task}")
    logger = get_run_logger()
    st = store_of(config)
    kind = config.sources[source].kind
    delta = config.ingest.window
    paths = expand_paths(config.sources[source].paths, st)
    obs = ObsTable(st, f"obs/{source}.zarr", config.ingest.row_chunk)
    catalogue = FileCatalogue(st, source, kind)
    ends = window_ends(t0, t1, delta)
    windows: dict[str, dict[str, Any]] = {}
    summary: dict[str, Any] = {
        "source": source, "start": t0.isoformat(), "end": t1.isoformat(), "window": str(delta), "workers": int(workers),
        "obs": obs.url, "quarantine": st.url(f"quarantine/{source}.zarr"), "catalogue": st.url(catalogue.path),
        "files": len(paths), "windows": windows,
    }
    failure: BaseException | None = None
    with _task_runner(int(workers)) as runner:
        todo = catalogue.unscanned(paths)
        if todo:
            logger.info("%s: scanning %d of %d files for their time range", source, len(todo), len(paths))
            scans = [runner.submit(scan_file_task, {"kind": kind, "path": p}) for p in todo]
            catalogue.update([f.result() for f in scans])  # a bad file stops here, before any write
        entries = catalogue.lookup(paths)
        summary["scanned"] = len(todo)
        summary["undated_rows"] = sum(e["undated"] for e in entries)

        complete = set(obs.index())
        queue: list[tuple[str, list[str]]] = []
        for e in ends:
            key = window_key(e)
            files = overlapping(entries, e - delta, e)
            windows[key] = {"status": "not run", "files": len(files)}
            if key in complete:
                windows[key]["status"] = "skipped"
            elif not files:
                windows[key]["status"] = "empty"
            else:
                queue.append((key, files))
        total = len(ends)
        done = total - len(queue)
        every = max(1, total // 20)
        logger.info("%s: %d windows of %s in (%s, %s]: %d to read, %d done already, %d without data",
                    source, total, delta, t0, t1, len(queue),
                    sum(w["status"] == "skipped" for w in windows.values()), sum(w["status"] == "empty" for w in windows.values()))

        # Tasks of up to `windows_per_task` consecutive windows: a file shared by them is decoded once.
        groups = [queue[i:i + windows_per_task] for i in range(0, len(queue), windows_per_task)]
        pending = deque(groups)
        in_flight: deque = deque()
        ready: dict[str, Any] = {}  # windows read, in time order, not committed yet
        limit = 2 * int(workers)
        last_commit = time.monotonic()
        while pending or in_flight or ready:
            while pending and len(in_flight) < limit:
                group = pending.popleft()
                keys = [k for k, _ in group]
                files = [e["path"] for e in entries if any(e["path"] in f for _, f in group)]
                params = {"name": source, "kind": kind, "paths": files, "keys": keys, "first": keys[0], "last": keys[-1], "window": delta}
                in_flight.append((keys, runner.submit(read_windows, params)))
            if in_flight:
                keys, future = in_flight.popleft()  # the oldest: commits stay in time order
                try:
                    ready.update(future.result())
                except Exception as exc:  # noqa: BLE001 - reported per window, then raised
                    failure = exc
                    for key in keys:
                        windows[key].update(status="failed", error=_one_line(exc))
            # Commit a row chunk's worth of windows at once (one append per table rewrites the
            # table's last chunk once), everything at the end or on failure, and at least every
            # COMMIT_INTERVAL seconds.
            rows = sum(len(qc.accepted) + len(qc.rejected) for qc in ready.values() if qc is not None)
            if ready and (failure is not None or not (pending or in_flight) or rows >= config.ingest.row_chunk
                          or time.monotonic() - last_commit > COMMIT_INTERVAL):
                read = {k: qc for k, qc in ready.items() if qc is not None}
                written: dict[str, str] = {}
                if read:
                    try:
                        accepted = pd.concat([qc.accepted for qc in read.values()], ignore_index=True)
                        rejected = pd.concat([qc.rejected for qc in read.values()], ignore_index=True)
                        written = commit_windows(config, source, accepted, rejected)
                    except Exception as exc:  # noqa: BLE001
                        failure = exc
                        for key in read:
                            windows[key].update(status="failed", error=_one_line(exc))
                        break
                for key, qc in ready.items():
                    if qc is None:
                        windows[key]["status"] = "empty"
                    else:
                        windows[key].update(status=written.get(key, "empty"), rows=int(qc.counts["total"]),
                                            accepted=int(qc.counts["accepted"]), rejected=int(len(qc.rejected)))
                    done += 1
                    if done % every == 0 or done == total:
                        counts = {s: n for s in STATUSES if (n := sum(w["status"] == s for w in windows.values())) and s != "not run"}
                        logger.info("%s: %d/%d windows done %s", source, done, total, counts)
                ready = {}
                last_commit = time.monotonic()
            if failure is not None:
                break
    summary["counts"] = {s: sum(w["status"] == s for w in windows.values()) for s in STATUSES}
    artifact_key = "backfill-" + re.sub(r"[^a-z0-9-]+", "-", source.lower())
    create_markdown_artifact(markdown=_markdown(summary), key=artifact_key, description=f"Backfill of {source}: status per window")
    if failure is not None:
        bad = next(k for k, w in windows.items() if w["status"] == "failed")
        raise ObscastError(
            f"backfill {source}: window {bad} failed: {windows[bad]['error']} "
            f"({summary['counts']['written'] + summary['counts']['unchanged']} windows committed in this run, "
            f"{summary['counts']['not run']} not run; run the same backfill again to resume)"
        ) from failure
    return summary
