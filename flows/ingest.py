"""Ingest flow: raw BUFR / GRIB files into the store's zarr tables and datasets, with QC.

All inputs are read and checked first; only when every input has been read is anything written,
so bad input ends the flow before the store is touched. Observations are written window by
window (idempotent: a window stored with the same content is left as it is); QC rejections go
to ``quarantine/<source>.zarr`` with their reason.

The run publishes the markdown artifact ``ingest-summary`` and the table artifact ``ingest-qc``
(rows per source and QC reason), and ends in a Completed state whose message names what was
quarantined (:func:`state_message`). Writes are retried on transient I/O errors only, never on
an :class:`obscast.components.errors.ObscastError` (a window stored with other content).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed

from obscast.components.config import Config
from obscast.components.store.gridstore import write_gridded
from obscast.components.store.obstable import ObsTable, WriteResult, split_windows
from obscast.components.obs.qc import apply_qc
from obscast.components.obs.readers.bufr import read_observations
from obscast.components.obs.readers.access import observation_reader, read_gridded_file, source_paths
from obscast.components.store.catalogue import read_tolerant, record_bad_files
from obscast.flows.common import WRITE_RETRIES, load, publish_table, store_of, task


def read_files(kind: str, paths: list[str], window=None) -> pd.DataFrame:
    """Read files of one source into one observation table, concatenated in the order of ``paths``.

    ``window = (start, end]`` keeps only the rows of that interval (the backfill flow reads its
    windows so, and QCs each window on its own: QC checks rows on their own or against earlier
    rows of the same time, so a window's result is that of a whole-range ingest).
    """
    tables = [read_observations(kind, p, window) for p in paths]
    return pd.concat(tables, ignore_index=True) if len(tables) > 1 else tables[0]


@task(name="read-observations", retries=0)
def read_source(name: str, kind: str, paths: list[str], strict: bool = False, netcdf=None):
    """Read and QC every file of one source: ``(QC result, files quarantined whole)`` (see
    :func:`obscast.components.store.catalogue.read_tolerant`; ``strict`` fails on the first bad file)."""
    table, bad = read_tolerant(kind, paths, strict=strict, reader=observation_reader(netcdf))  # BUFR or netCDF
    return apply_qc(table, kind, source=name), bad


def write_observation_windows(config: Config, name: str, accepted: pd.DataFrame, rejected: pd.DataFrame) -> list[tuple[str, WriteResult]]:
    """Write one source's quarantined rows, then its accepted rows, window by window.

    The quarantine goes first so that a window in the ``obs`` index has its rejected rows stored
    too (the backfill flow skips the windows of the ``obs`` index). Each table gets one append.

    Returns
    -------
    list of (table, WriteResult)
        ``table`` is ``"quarantine"`` or ``"obs"``; one result per window of that table.
    """
    store = store_of(config)
    out: list[tuple[str, WriteResult]] = []
    for table, frame in (("quarantine", rejected), ("obs", accepted)):
        obs_table = ObsTable(store, f"{table}/{name}.zarr", config.ingest.row_chunk)
        out.extend((table, result) for result in obs_table.write_windows(split_windows(frame, config.ingest.window)))
    return out


@task(name="write-observations", **WRITE_RETRIES)
def write_source(config: Config, name: str, accepted: pd.DataFrame, rejected: pd.DataFrame) -> dict[str, Any]:
    """Write one source's quarantined and accepted rows (see :func:`write_observation_windows`)."""
    store = store_of(config)
    status: dict[str, int] = {"written": 0, "unchanged": 0}
    for _, result in write_observation_windows(config, name, accepted, rejected):
        status[result.status] += 1
    return {"obs": store.url(f"obs/{name}.zarr"), "quarantine": store.url(f"quarantine/{name}.zarr"), "windows": status}


@task(name="read-gridded")
def read_gridded(paths: list[str], netcdf=None):
    import xarray as xr

    parts = [read_gridded_file(p, netcdf) for p in paths]  # GRIB or netCDF
    return parts[0] if len(parts) == 1 else xr.concat(parts, dim="time").sortby("time")


@task(name="write-gridded", **WRITE_RETRIES)
def write_gridded_task(config: Config, name: str, ds) -> dict[str, str]:
    url, status = write_gridded(store_of(config), name, ds)
    return {"url": url, "status": status}


def _markdown(summary: dict[str, Any]) -> str:
    lines = ["## Ingest", "", "| source | total | accepted | rejected | reasons | windows written / unchanged |", "|---|---|---|---|---|---|"]
    for name, s in summary["sources"].items():
        reasons = ", ".join(f"{k}: {v}" for k, v in s["qc"].items() if k not in ("total", "accepted")) or "none"
        lines.append(
            f"| {name} | {s['qc']['total']} | {s['qc']['accepted']} | {s['qc']['total'] - s['qc']['accepted']} | {reasons} "
            f"| {s['windows']['written']} / {s['windows']['unchanged']} |"
        )
    for name, g in summary["gridded"].items():
        lines.append(f"| gridded {name} | | | | | {g['status']} |")
    for name, s in summary["sources"].items():  # files quarantined whole (undecodable)
        lines += [f"- {name}: file quarantined: {b['reason']}" for b in s.get("bad_files", [])]
    return "\n".join(lines) + "\n"


def qc_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the ``ingest-qc`` table artifact: one per source and QC outcome (``accepted`` and
    every reason code, zero counts included), with the count and its share of the source's rows."""
    rows = []
    for name, s in summary["sources"].items():
        total = s["qc"]["total"]
        for outcome, n in s["qc"].items():
            if outcome != "total":
                rows.append({"source": name, "outcome": outcome, "rows": int(n), "percent": round(100.0 * n / total, 3) if total else 0.0})
    return rows


def state_message(summary: dict[str, Any]) -> str:
    """One line for the flow run's final state: per source the rows quarantined and why, e.g.
    ``"synop: 37 of 3600 rows quarantined (out_of_range:air_temperature 37); temp: 0 of 812 rows
    quarantined; gridded era5: written"``."""
    parts = []
    for name, s in summary["sources"].items():
        reasons = {k: v for k, v in s["qc"].items() if k not in ("total", "accepted") and v}
        why = f" ({', '.join(f'{k} {v}' for k, v in reasons.items())})" if reasons else ""
        parts.append(f"{name}: {s['qc']['total'] - s['qc']['accepted']} of {s['qc']['total']} rows quarantined{why}")
        if s.get("bad_files"):
            parts[-1] += f", {len(s['bad_files'])} file(s) quarantined whole (undecodable)"
    parts += [f"gridded {name}: {g['status']}" for name, g in summary["gridded"].items()]
    return "; ".join(parts) or "nothing configured"


@flow(name="ingest", log_prints=True)
def ingest_flow(config_path: str | None = None, store: str | None = None, strict: bool = False) -> dict[str, Any]:
    """Ingest every configured source and gridded dataset.

    Parameters
    ----------
    config_path : str, optional
        YAML configuration (the embedded default when None).
    store : str, optional
        Overrides the configuration's store URL.
    strict : bool, optional
        Fail on the first file that cannot be decoded (``obscast ingest --strict``); by default
        such a file is quarantined whole and the rest of the source is ingested.

    Returns
    -------
    dict
        ``{"sources": {name: {"qc": counts, "windows": ..., "obs": url, "quarantine": url,
        "bad_files": [{"path", "field", "reason"}, ...], "bad_files_record": url}},
        "gridded": {name: {"url", "status"}}}``. The flow run ends in a Completed state whose
        message is :func:`state_message`.
    """
    config = load(config_path, store)
    logger = get_run_logger()
    # Read everything first: an unreadable source (or, with strict, a bad file) stops the flow before anything is written.
    st = store_of(config)
    paths = {name: source_paths(src, st) for name, src in config.sources.items()}
    qc_results = {name: read_source.submit(name, src.kind, paths[name], strict, src.netcdf) for name, src in config.sources.items()}
    grids = {name: read_gridded.submit(source_paths(g, st), g.netcdf) for name, g in config.gridded.items()}
    qc_results = {name: fut.result() for name, fut in qc_results.items()}
    grids = {name: fut.result() for name, fut in grids.items()}
    summary: dict[str, Any] = {"sources": {}, "gridded": {}}
    for name, (qc, bad) in qc_results.items():
        written = write_source(config, name, qc.accepted, qc.rejected)
        summary["sources"][name] = {"qc": dict(qc.counts), **written, "bad_files": bad,
                                    "bad_files_record": record_bad_files(st, name, bad, paths[name])}
        logger.info("%s: %d rows, %d accepted, %d quarantined", name, qc.counts["total"], qc.counts["accepted"], len(qc.rejected))
    for name, ds in grids.items():
        summary["gridded"][name] = write_gridded_task(config, name, ds)
    create_markdown_artifact(markdown=_markdown(summary), key="ingest-summary", description="Ingest counts and QC rejections")
    publish_table("ingest-qc", qc_rows(summary), "Rows per source and QC outcome (accepted or the reason of the quarantine)")
    message = state_message(summary)
    logger.info(message)
    return Completed(message=message, data=summary)
