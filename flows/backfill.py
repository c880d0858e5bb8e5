"""Backfill flow: ingest one observation source over a time range, window by window.

``obscast backfill --source synop --start 2000-01-01 --end 2000-01-09 [--workers 2 | --address tcp://host:8786]``
(or this flow with the same parameters from the Prefect UI) cuts the range into the windows
``(end - Δ, end]`` of ``ingest.window`` that overlap ``(start, end]`` (whole windows: a window
is the unit that is committed), then

1. skips the windows that the ``obs/<source>.zarr`` window index has already (``"skipped"``);
2. decodes every raw file that the file catalogue (:mod:`obscast.components.store.catalogue`,
   ``catalogue/<source>.json``, keyed by path, size and mtime) does not know yet, **once**, in
   ``decode-files`` tasks: each gives the files' catalogue entries and their rows in the
   windows still to do, QC'd window by window, which the flow keeps (up to :data:`CACHE_ROWS`
   rows; beyond that the windows' files are read again in step 4) -- so a fresh backfill decodes
   every file once;
3. gives each window only the files whose observations fall in it, known from the catalogue;
   a window that no file covers is ``"empty"``;
4. QCs each window on its own: a window whose files were all decoded in step 2 has its QC from
   there (a window with rows from several files is put together and QC'd again in the flow,
   :func:`qc_cached`); the others are read in ``read-windows`` tasks of up to
   ``windows_per_task`` consecutive windows (default 4, so that a daily file is decoded once for
   its four 6-hour windows);
5. commits windows from the flow process, **one writer, in chronological order**: their
   quarantined rows, then their accepted rows (:func:`obscast.flows.ingest.write_observation_windows`),
   several windows per append (about ``ingest.row_chunk`` rows, or what was read in the last
   10 s; up to 4 row chunks when every window was decoded in step 2), so that the table's last
   chunk is rewritten once per chunk rather than once per window. Status ``"written"``, or ``"unchanged"`` when an identical window is stored already.
   Writers in other processes (a second backfill, an ingest) are kept apart by the table's
   lock (:meth:`obscast.components.store.obstable.ObsTable.write_windows`), so two backfills over
   overlapping ranges at once store each window once.

Where the tasks run (the task runner): with ``workers=1`` in one thread of the flow process; with
``workers=N > 1`` on a local Dask cluster of ``N`` worker processes (prefect-dask), started from a
forkserver that has imported obscast already (a worker starts in well under a second instead of
importing obscast, Prefect and pandas itself); with ``address`` (``--address``, or
``ingest.dask_address`` in the configuration) on the workers of an existing Dask scheduler
(prefect-dask's ``DaskTaskRunner(address=...)``: a cluster on other machines, Dask Gateway,
Kubernetes), whose workers must be able to import obscast and read the raw files and the store.
At most two tasks per worker thread are in flight.

Because windows are committed in time order and each commit is atomic (rows first, then the
index), a run killed at any point and run again gives the same store as an uninterrupted run.
The first window that fails ends the backfill: later windows are ``"not run"`` and the flow
fails with that window's error; run it again to resume.

Per-window statuses are returned, logged as progress lines ``windows done / total``, shown as
the progress artifact ``backfill-<source>-progress`` while the run goes on, and published as
the markdown artifact ``backfill-<source>`` and the table artifact ``backfill-<source>-windows``.
The final state's message says how many windows were written, skipped and empty, and how many
rows were quarantined and why.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed

from obscast.components.store.catalogue import FileCatalogue, file_entry, file_fingerprint, overlapping
from obscast.components.config import Config
from obscast.components.errors import ConfigError, ObscastError
from obscast.components.store.obstable import ObsTable, split_windows, window_key
from obscast.components.obs.qc import apply_qc
from obscast.components.obs.readers.bufr import read_observations
from obscast.components.store.storage import expand_paths
from obscast.flows.common import WRITE_RETRIES, Progress, artifact_key, load, publish_table, store_of, task
from obscast.flows.ingest import read_files, write_observation_windows

STATUSES = ("written", "unchanged", "skipped", "empty", "failed", "not run")
COMMIT_INTERVAL = 10.0  # seconds: read windows wait at most about this long for their commit
#: Rows of decoded windows that the flow keeps from the files decoded for the catalogue, for their
#: commit (about 120 bytes a row, so about 250 MB): windows beyond this are read again by
#: ``read-windows`` tasks.
CACHE_ROWS = 2_000_000
#: Row chunks (``ingest.row_chunk``) per append when every window was decoded for the catalogue.
COMMIT_CHUNKS = 4
_ADDRESS = re.compile(r"^([a-z0-9+]+://)?(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+):\d{1,5}/?$")


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


def check_request(config: Config, source: str, start: Any, end: Any, workers: int = 1, config_path: str | None = None,
                  address: str | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """Validate a backfill request before anything runs.

    Parameters
    ----------
    address : str, optional
        The Dask scheduler given by ``--address`` or ``ingest.dask_address`` (already resolved).

    Returns
    -------
    (start, end) : pandas.Timestamp
        UTC, tz-naive.

    Raises
    ------
    ConfigError
        Unknown ``source`` (names the configured ones), a time that does not parse, ``end`` not
        after ``start``, ``workers`` < 1, an ``address`` that is not ``[protocol://]host:port``,
        or both ``workers`` > 1 (a local cluster) and an ``address``.
    """
    if source not in config.sources:
        where = config_path or "configs/default.yaml"
        raise ConfigError(f"--source: expected one of the sources of {where}: {sorted(config.sources)}, found {source!r}")
    t0, t1 = parse_time(start, "--start"), parse_time(end, "--end")
    if t1 <= t0:
        raise ConfigError(f"--end: expected a time after --start {t0.isoformat()}, found {t1.isoformat()}")
    if int(workers) < 1:
        raise ConfigError(f"--workers: expected 1 or more worker processes, found {workers}")
    if address is not None:
        if not _ADDRESS.match(str(address)):
            raise ConfigError(f"--address (or ingest.dask_address): expected a Dask scheduler address [protocol://]host:port, "
                              f"e.g. tcp://10.0.0.5:8786, found {address!r}")
        if int(workers) > 1:
            raise ConfigError(f"--workers: {workers} local worker processes were asked for, but the windows go to the Dask "
                              f"scheduler {address} (--address or ingest.dask_address): give one of the two")
    return t0, t1


def resolve_address(config: Config, address: str | None) -> str | None:
    """The Dask scheduler of a backfill: ``address`` (``--address``), else ``ingest.dask_address``, else None."""
    return address or config.ingest.dask_address or None


@task(name="decode-files", task_run_name="decode-files-{name}-{label}")
def decode_files(name: str, kind: str, paths: list[str], label: str, keys: list[str], window: pd.Timedelta, keep: bool = True) -> list[dict[str, Any]]:
    """Decode each file once: its catalogue entry and, with ``keep``, its rows in the windows
    ``keys``, QC'd window by window (the result for a window that has rows from this file only).

    Parameters
    ----------
    name, kind : str
        Source name and WMO observation type.
    paths : list of str
        Raw files, decoded one after the other.
    label : str
        Names the task run (e.g. the first file).
    keys : list of str
        Window keys (end times, :func:`obscast.components.store.obstable.window_key`) whose rows
        are wanted; rows of other windows are dropped.
    window : pandas.Timedelta
        Window length.
    keep : bool
        False: return the entries only (the flow keeps no more rows).

    Returns
    -------
    list of dict
        Per file ``{"entry": catalogue entry, "parts": {window key: QCResult}}`` (``parts`` None
        without ``keep``): the QC of the file's rows of that window in the reader's order
        (stably sorted by time); accepted and rejected rows keep their positions in that order
        as index labels, so the rows can be put together again (:func:`qc_cached`).

    Raises
    ------
    InputError
        Missing, truncated or undecodable file (from the reader).
    """
    wanted = set(keys)
    out = []
    t0 = time.perf_counter()
    for path in paths:
        fingerprint = file_fingerprint(path)
        table = read_observations(kind, path)
        parts = {k: apply_qc(rows, kind, source=name) for k, rows in split_windows(table, window).items() if k in wanted} if keep else None
        out.append({"entry": file_entry(kind, fingerprint, table), "parts": parts})
    get_run_logger().info("%s: decoded %d files (%d rows) in %.1f s", name, len(paths), sum(o["entry"]["rows"] for o in out), time.perf_counter() - t0)
    return out


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


@task(name="commit-windows", **WRITE_RETRIES)
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


def qc_cached(name: str, kind: str, files: list[str], key: str, cached: dict[str, dict[str, Any]]):
    """The QC result of one window from those of its files' rows (:func:`decode_files`), equal to
    what :func:`read_windows` gives from the files themselves.

    With rows from one file the file's result is the window's. With rows from several files, each
    file's rows are put together again from its accepted and rejected rows (in their original
    order, the index labels), concatenated in the order of ``files``, stably sorted by time and
    QC'd again (duplicates are found across files).

    Returns
    -------
    QCResult or None
        None when no file has rows in the window.
    """
    results = [cached[f][key] for f in files if key in cached[f]]
    if len(results) <= 1:
        return results[0] if results else None
    raw = [pd.concat([r.accepted.drop(columns="qc"), r.rejected.drop(columns="reason")]).sort_index() for r in results]
    rows = pd.concat(raw, ignore_index=True).sort_values("time", kind="stable").reset_index(drop=True)
    return apply_qc(rows, kind, source=name)


@contextmanager
def _task_runner(workers: int, address: str | None):
    """The task runner, entered: one thread, a local Dask cluster or an existing scheduler's workers."""
    if address:
        from prefect_dask import DaskTaskRunner

        with DaskTaskRunner(address=address) as runner:
            yield runner
    elif workers == 1:
        from prefect.task_runners import ThreadPoolTaskRunner

        with ThreadPoolTaskRunner(max_workers=1) as runner:
            yield runner
    else:
        import dask
        from distributed.utils import get_mp_context
        from prefect_dask import DaskTaskRunner

        # Worker processes are forks of a server that has imported obscast (and Prefect, pandas,
        # eccodes) once, instead of each importing them (several seconds on a busy machine).
        with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
            get_mp_context().set_forkserver_preload(["distributed", "prefect.task_engine", "prefect_dask", "obscast.flows.backfill"])
            cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
            with DaskTaskRunner(cluster_kwargs=cluster) as runner:
                yield runner


def _threads(runner, workers: int, address: str | None) -> int:
    """Worker threads of the task runner (those of the scheduler's workers now for an address).

    Raises
    ------
    ObscastError
        If no Dask scheduler answers at ``address``.
    """
    if not address:
        return int(workers)
    try:
        return max(1, sum(runner.client.nthreads().values()))
    except OSError as exc:
        raise ObscastError(f"--address {address}: no Dask scheduler answered ({_one_line(exc)})") from exc


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


def state_message(summary: dict[str, Any]) -> str:
    """One line for the flow run's final state: windows per status, rows quarantined and why,
    undated rows left out (e.g. ``"synop: 13 windows: 12 written, 1 skipped; 37 rows quarantined
    (out_of_range:air_temperature 37); 0 undated rows in the files"``)."""
    counts = ", ".join(f"{n} {s}" for s, n in summary["counts"].items() if n) or "none"
    reasons = summary.get("quarantined", {})
    rejected = sum(reasons.values())
    why = f" ({', '.join(f'{k} {v}' for k, v in reasons.items())})" if reasons else ""
    return (f"{summary['source']}: {len(summary['windows'])} windows: {counts}; {rejected} rows quarantined{why}; "
            f"{summary.get('undated_rows', 0)} undated rows in the files (in no window)")


@flow(name="backfill", log_prints=True)
def backfill_flow(source: str, start: str | datetime, end: str | datetime, config_path: str | None = None, store: str | None = None, workers: int = 1,
                  windows_per_task: int = 4, address: str | None = None) -> dict[str, Any]:
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
        1: tasks run one at a time in a thread; N > 1: on a local Dask cluster of N worker
        processes. Must be 1 with an ``address``.
    windows_per_task : int, optional
        Consecutive windows read by one ``read-windows`` task (their files are decoded once for all of them).
    address : str, optional
        A Dask scheduler, ``[protocol://]host:port``, whose workers run the tasks (default:
        ``ingest.dask_address`` of the configuration; None there too: this machine).

    Returns
    -------
    dict
        ``source``, ``start``, ``end``, ``window``, ``workers``, ``engine`` (where the tasks ran),
        ``obs``/``quarantine``/``catalogue`` URLs, ``files`` (count), ``scanned`` (files decoded
        for the catalogue in this run), ``undated_rows``, ``counts`` (windows per status of
        :data:`STATUSES`), ``quarantined`` (rows quarantined in this run per QC reason) and
        ``windows``: window key (end time) -> ``{"status", "files", "rows", "accepted",
        "rejected"}`` (the last three for windows that were read). The flow run ends in a
        Completed state whose message is :func:`state_message`.

    Raises
    ------
    ConfigError
        Bad source, times, workers or address (see :func:`check_request`).
    InputError
        A configured file is missing or cannot be decoded (nothing is written).
    ObscastError
        A window failed (windows before it are committed, the rest are not run), or no Dask
        scheduler answers at ``address``.
    """
    config = load(config_path, store)
    address = resolve_address(config, address)
    t0, t1 = check_request(config, source, start, end, workers, config_path, address)
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
    engine = (f"Dask scheduler {address}" if address else "one thread" if int(workers) == 1
              else f"local Dask cluster of {int(workers)} processes")
    summary: dict[str, Any] = {
        "source": source, "start": t0.isoformat(), "end": t1.isoformat(), "window": str(delta), "workers": int(workers),
        "engine": engine, "obs": obs.url, "quarantine": st.url(f"quarantine/{source}.zarr"), "catalogue": st.url(catalogue.path),
        "files": len(paths), "windows": windows,
    }
    quarantined: dict[str, int] = {}
    failure: BaseException | None = None
    slug = artifact_key("backfill", source)
    progress = Progress(f"{slug}-progress", f"Backfill of {source}: windows done of {len(ends)}")
    complete = set(obs.index())
    with _task_runner(int(workers), address) as runner:
        threads = _threads(runner, int(workers), address)
        limit = 2 * threads
        # Files new to the catalogue are decoded once, in tasks of a few files; their rows in the
        # windows to do are kept (up to CACHE_ROWS) for step 4.
        todo = catalogue.unscanned(paths)
        cached: dict[str, dict[str, Any]] = {}  # path -> {window key: QCResult of the file's rows}
        kept = 0
        if todo:
            wanted = [k for k in map(window_key, ends) if k not in complete]
            # Few tasks: each costs about a second of Prefect orchestration on a Dask worker.
            per = max(1, min(8, math.ceil(len(todo) / (2 * threads))))
            batches = deque(todo[i:i + per] for i in range(0, len(todo), per))
            logger.info("%s: decoding %d of %d files (new to the catalogue) on %s, %d per task", source, len(todo), len(paths), engine, per)
            scans, scanned = deque(), []
            while batches or scans:
                while batches and len(scans) < limit:
                    batch = batches.popleft()
                    params = {"name": source, "kind": kind, "paths": batch, "label": batch[0].rsplit("/", 1)[-1], "keys": wanted,
                              "window": delta, "keep": kept < CACHE_ROWS}
                    scans.append(runner.submit(decode_files, params))
                for decoded in scans.popleft().result():  # a bad file stops here, before any write
                    scanned.append(decoded["entry"])
                    rows = sum(qc.counts["total"] for qc in (decoded["parts"] or {}).values())
                    if decoded["parts"] is not None and kept + rows <= CACHE_ROWS:
                        cached[decoded["entry"]["path"]] = decoded["parts"]
                        kept += rows
            catalogue.update(scanned)
        entries = catalogue.lookup(paths)
        summary["scanned"] = len(todo)
        summary["undated_rows"] = sum(e["undated"] for e in entries)

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
        progress.update(done, total)
        logger.info("%s: %d windows of %s in (%s, %s]: %d to read (%d decoded already), %d done already, %d without data",
                    source, total, delta, t0, t1, len(queue), sum(all(f in cached for f in files) for _, files in queue),
                    sum(w["status"] == "skipped" for w in windows.values()), sum(w["status"] == "empty" for w in windows.values()))

        # Tasks of up to `windows_per_task` consecutive windows: a file shared by them is decoded
        # once. Windows whose files were all decoded above are QC'd here instead.
        groups = [queue[i:i + windows_per_task] for i in range(0, len(queue), windows_per_task)]
        pending = deque(groups)
        # Windows read by tasks are committed about a row chunk at a time (bounded memory); when
        # every window is in memory already, up to COMMIT_CHUNKS row chunks at a time (an append
        # costs about as much as writing 100,000 rows: it rewrites the table's last chunks and index).
        all_cached = all(f in cached for _, files in queue for f in files)
        commit_rows = config.ingest.row_chunk * (COMMIT_CHUNKS if all_cached else 1)
        in_flight: deque = deque()
        ready: dict[str, Any] = {}  # windows read, in time order, not committed yet
        last_commit = time.monotonic()
        while pending or in_flight or ready:
            while pending and len(in_flight) < limit:
                group = pending.popleft()
                keys = [k for k, _ in group]
                if all(f in cached for _, files in group for f in files):
                    in_flight.append((keys, group))
                    continue
                files = [e["path"] for e in entries if any(e["path"] in f for _, f in group)]
                params = {"name": source, "kind": kind, "paths": files, "keys": keys, "first": keys[0], "last": keys[-1], "window": delta}
                in_flight.append((keys, runner.submit(read_windows, params)))
            if in_flight:
                keys, future = in_flight.popleft()  # the oldest: commits stay in time order
                try:
                    if isinstance(future, list):  # a group of windows decoded already: QC'd here
                        for key, files in future:
                            ready[key] = qc_cached(source, kind, files, key, cached)
                            for f in files:
                                cached[f].pop(key, None)  # free the rows once QC'd
                    else:
                        ready.update(future.result())
                except Exception as exc:  # noqa: BLE001 - reported per window, then raised
                    failure = exc
                    for key in keys:
                        windows[key].update(status="failed", error=_one_line(exc))
            # Commit a row chunk's worth of windows at once (one append per table rewrites the
            # table's last chunk once), everything at the end or on failure, and at least every
            # COMMIT_INTERVAL seconds.
            rows = sum(len(qc.accepted) + len(qc.rejected) for qc in ready.values() if qc is not None)
            if ready and (failure is not None or not (pending or in_flight) or rows >= commit_rows
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
                                            accepted=int(qc.counts["accepted"]), rejected=len(qc.rejected))
                        for reason, n in qc.counts.items():
                            if reason not in ("total", "accepted") and n:
                                quarantined[reason] = quarantined.get(reason, 0) + int(n)
                    done += 1
                    if done % every == 0 or done == total:
                        counts = {s: n for s in STATUSES if (n := sum(w["status"] == s for w in windows.values())) and s != "not run"}
                        logger.info("%s: %d/%d windows done %s", source, done, total, counts)
                progress.update(done, total)
                ready = {}
                last_commit = time.monotonic()
            if failure is not None:
                break
    summary["counts"] = {s: sum(w["status"] == s for w in windows.values()) for s in STATUSES}
    summary["quarantined"] = dict(sorted(quarantined.items()))
    create_markdown_artifact(markdown=_markdown(summary), key=slug, description=f"Backfill of {source}: status per window")
    publish_table(f"{slug}-windows", [{"window_end": k, "status": w["status"], "files": w["files"], "rows": w.get("rows"),
                                        "accepted": w.get("accepted"), "rejected": w.get("rejected")} for k, w in windows.items()],
                  f"Backfill of {source}: status and QC counts per window")
    if failure is not None:
        bad = next(k for k, w in windows.items() if w["status"] == "failed")
        raise ObscastError(
            f"backfill {source}: window {bad} failed: {windows[bad]['error']} "
            f"({summary['counts']['written'] + summary['counts']['unchanged']} windows committed in this run, "
            f"{summary['counts']['not run']} not run; run the same backfill again to resume)"
        ) from failure
    message = state_message(summary)
    logger.info(message)
    return Completed(message=message, data=summary)
