"""Backfill scaling benchmark: ``backfill`` with 2 Dask workers against 1 worker, in one run.

Two inputs (``--input``; default ``both``, one after the other, printing both ratios):

* ``synop-sample``: **real SYNOP reports** as they arrive on the GTS, one uncompressed
  single-subset BUFR message per report: the first ``--reports`` (default 1000) messages of
  ``data/samples/perf_synop.bufr`` re-stamped with eccodes (date and hour in sections 1 and 4)
  into 30 consecutive 6-hour windows from 2018-11-01T00:00, one file per window (made once
  into ``--data``). Decoding such files (pdbufr, ~1000 reports/s per core) dominates the
  backfill, as in an operational archive.
* ``osse``: the OSSE's compressed multi-subset SYNOP BUFR, one file per day, 8 days
  (2000-01-01 to 2000-01-08), i.e. 32 windows, about 240,000 rows (made once with ``obscast
  simulate`` of ``tests/flows/tiny_osse.yaml`` over 8 days, or copied into
  ``<data>/raw/osse/synop/`` from any OSSE store). These decode at ~250,000 rows/s, so the
  fixed costs (Dask start, Prefect's orchestration of each task on a worker) and the serial
  commit weigh most.

Every timed run backfills the whole period into a fresh store (the raw files linked in), so
each run also decodes the files for the catalogue (once: the backfill keeps their rows). The
runs alternate (1 then 2 workers, then 2 then 1, ...) under one real Prefect server started
here, and the stores of the two variants are checked to be identical (the same windows with
the same digests at the same rows). The first 2-worker run of the process also starts the
forkserver that the local cluster's workers are forked from (it imports obscast once); later
runs reuse it, as a long-lived process (``obscast serve``, a worker) does.

Usage::

    .venv/bin/python benchmarks/backfill_benchmark.py [--input both|synop-sample|osse] [--data DIR] [--repeats 3]

Prints, per input, the median wall time of each variant (and every run), windows and rows per
second and the ratio ``time(2 workers) / time(1 worker)`` (below 1: the Dask path is faster),
then both speed-ups. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OSSE_CONFIG = ROOT / "tests" / "flows" / "tiny_osse.yaml"
SYNOP_SAMPLE = ROOT / "data" / "samples" / "perf_synop.bufr"
#: (start, end] of each input: 30 windows of the re-stamped reports, 32 windows of 8 OSSE days.
PERIODS = {"synop-sample": ("2018-11-01T00:00", "2018-11-08T12:00"), "osse": ("1999-12-31T18:00", "2000-01-08T18:00")}


def make_sample_data(data: Path, reports: int, n_windows: int = 30) -> Path:
    """Write ``n_windows`` files ``raw/synop/<YYYYmmddHH>.bufr`` of ``reports`` real SYNOP messages each.

    The messages are the first ``reports`` of the sample file (one station report per message,
    uncompressed), re-stamped to the middle of consecutive 6-hour windows from 2018-11-01T00:00
    (``day``/``hour`` in the data section, ``typicalDay``/``typicalHour`` in section 1). Returns
    the configuration file written beside them (one source ``synop`` reading those files).
    """
    import eccodes
    import pandas as pd

    raw = data / "raw" / "synop"
    raw.mkdir(parents=True, exist_ok=True)
    messages = []
    with open(SYNOP_SAMPLE, "rb") as f:
        while len(messages) < reports and (h := eccodes.codes_bufr_new_from_file(f)) is not None:
            eccodes.codes_set(h, "unpack", 1)
            messages.append(h)
    start = pd.Timestamp(PERIODS["synop-sample"][0])
    print(f"re-stamping {len(messages)} SYNOP reports into {n_windows} windows in {raw} ...", flush=True)
    for k in range(n_windows):
        t = start + pd.Timedelta(hours=6 * k + 3)
        with open(raw / f"{t:%Y%m%d%H}.bufr", "wb") as out:
            for h in messages:
                for key, value in (("day", t.day), ("hour", t.hour), ("typicalDay", t.day), ("typicalHour", t.hour)):
                    eccodes.codes_set(h, key, value)
                eccodes.codes_set(h, "pack", 1)
                out.write(eccodes.codes_get_message(h))
    for h in messages:
        eccodes.codes_release(h)
    config = data / "backfill.yaml"
    config.write_text("store: store\nsources:\n  synop: {kind: synop, paths: [raw/synop/*.bufr]}\ningest: {window: 6h}\n")
    return config


def make_osse_data(data: Path) -> None:
    """Simulate 8 days of the tiny OSSE into ``data`` (raw/osse/<kind>/<YYYYMMDD>.bufr)."""
    env = {**os.environ, "OBSCAST_OSSE__NATURE__LENGTH_DAYS": "8"}
    print(f"simulating 8 days of the tiny OSSE into {data} ...", flush=True)
    subprocess.run([str(Path(sys.executable).with_name("obscast")), "simulate", "--config", str(OSSE_CONFIG), "--store", str(data)],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def run_once(data: Path, tmp: Path, source: str, workers: int, tag: str, config: Path, period: tuple[str, str]) -> tuple[float, dict]:
    from obscast.flows.backfill import backfill_flow

    store = tmp / f"store-{tag}"
    store.mkdir()
    (store / "raw").symlink_to(data / "raw", target_is_directory=True)
    t0 = time.perf_counter()
    result = backfill_flow(source=source, start=period[0], end=period[1], config_path=str(config), store=str(store), workers=workers)
    return time.perf_counter() - t0, result


def prepare(name: str, data: Path | None, source: str, reports: int) -> tuple[Path, Path, str]:
    """(data directory, configuration, source) of an input, made when missing."""
    data = data or Path(tempfile.gettempdir()) / f"obscast-bfdata-{name}"
    if name == "osse":
        if not (data / "raw" / "osse" / source).is_dir():
            make_osse_data(data)
        return data, OSSE_CONFIG, source
    config = data / "backfill.yaml"
    if not config.exists():
        config = make_sample_data(data, reports)
    return data, config, "synop"


def compare(name: str, data: Path, config: Path, source: str, repeats: int, tmp: Path) -> dict:
    """Alternate 1- and 2-worker backfills of one input (first run of each variant included)."""
    from obscast.components.store.obstable import ObsTable
    from obscast.components.store.storage import Store

    period = PERIODS[name]
    times: dict[int, list[float]] = {1: [], 2: []}
    results: dict[int, dict] = {}
    for rep in range(repeats):
        for workers in ((1, 2) if rep % 2 == 0 else (2, 1)):
            elapsed, result = run_once(data, tmp, source, workers, f"{name}-{workers}-{rep}", config, period)
            times[workers].append(elapsed)
            results[workers] = result
            print(f"  {name} rep {rep + 1}/{repeats} workers={workers}: {elapsed:6.1f} s  {result['counts']}", flush=True)
    index = {w: ObsTable(Store(results[w]["obs"].rsplit("/obs/", 1)[0]), f"obs/{source}.zarr").index() for w in (1, 2)}
    n_windows = len(results[1]["windows"])
    return {"name": name, "source": source, "times": times, "windows": n_windows, "files": results[1]["files"],
            "rows": sum(w.get("rows", 0) for w in results[1]["windows"].values()),
            "same": index[1] == index[2] and all(r["counts"]["written"] == n_windows for r in results.values())}


def report(r: dict) -> float:
    t1, t2 = statistics.median(r["times"][1]), statistics.median(r["times"][2])
    print()
    print(f"input {r['name']}, source {r['source']}: {r['windows']} windows, {r['rows']} rows, {r['files']} files")
    print(f"{'workers':>7s} {'median s':>9s} {'windows/s':>10s} {'rows/s':>10s}  runs (s)")
    for w, t in ((1, t1), (2, t2)):
        print(f"{w:7d} {t:9.1f} {r['windows'] / t:10.2f} {r['rows'] / t:10,.0f}  {' '.join(f'{x:.1f}' for x in r['times'][w])}")
    print(f"ratio time(2 workers) / time(1 worker) = {t2 / t1:.2f}  (speed-up {t1 / t2:.2f}x)")
    print(f"stores identical (window index: rows, digests, positions): {r['same']}")
    return t1 / t2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", default="both", choices=["both", *sorted(PERIODS)], help="benchmark input(s) (see the module docstring)")
    parser.add_argument("--data", type=Path, default=None,
                        help="directory for the input files of one --input (made when missing; default: obscast-bfdata-<input> in the temporary directory)")
    parser.add_argument("--source", default="synop", choices=["synop", "temp", "aircraft", "satellite"], help="source backfilled (osse input only)")
    parser.add_argument("--reports", type=int, default=1000, help="SYNOP reports per window (synop-sample input)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per variant (median reported)")
    args = parser.parse_args(argv)
    names = sorted(PERIODS, reverse=True) if args.input == "both" else [args.input]
    if args.data is not None and len(names) > 1:
        parser.error("--data needs one --input")
    inputs = [(name, *prepare(name, args.data, args.source, args.reports)) for name in names]

    from obscast.infra.prefect_server import prefect_server, server_env, temporary_env

    with tempfile.TemporaryDirectory(prefix="obscast-bfbench-") as tmp_name:
        tmp = Path(tmp_name)
        home = tmp / "prefect-home"
        with prefect_server(home) as url, temporary_env(PREFECT_API_URL=url, PREFECT_HOME=server_env(home)["PREFECT_HOME"],
                                                         PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING"):
            results = [compare(name, data, config, source, args.repeats, tmp) for name, data, config, source in inputs]
    speedups = {r["name"]: report(r) for r in results}
    print()
    print("speed-up with 2 workers: " + ", ".join(f"{name} {s:.2f}x" for name, s in speedups.items()) + "  (target 1.6x)")
    return 0 if all(r["same"] and r["windows"] >= 30 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
