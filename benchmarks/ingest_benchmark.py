"""Ingest overhead benchmark: obscast's ingest against the bare library path on the same files.

For every sample file it times, alternately, ``repeats`` times each:

* **bare** — what a user would write with the libraries alone:
  BUFR ``pdbufr.read_bufr(path, columns=<obscast's keys>, required_columns=False)`` ->
  ``xarray.Dataset.from_dataframe`` -> ``to_zarr``; GRIB ``xarray.open_dataset(engine="cfgrib")``
  -> ``to_zarr``;
* **ours** — obscast's ingest of that file as ``flows/ingest.py`` does it, without Prefect:
  BUFR ``read_observations`` -> ``apply_qc`` -> ``split_windows`` -> ``ObsTable.write_windows``
  (one append per table) for the accepted and the quarantined rows; GRIB ``read_grib`` -> ``write_gridded``;

and prints the median times, rows per second and the ratio ours / bare per file and overall
(sum of the medians), with the median time of each stage so that a ratio above the target
(1.3) can be traced to a stage. Every repeat writes to a fresh target. Runs on local disk, and
with ``--s3`` also on a local SeaweedFS S3 server (``infra.s3_server.s3_server``).

Usage::

    .venv/bin/python benchmarks/ingest_benchmark.py [--repeats 3] [--s3] [--no-local] [--files NAME ...]

Exit code 0 (also when a ratio is above the target) unless ``--max-ratio`` is given and the
overall ratio exceeds it. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
import pdbufr  # noqa: E402
import xarray as xr  # noqa: E402

from obscast.components.store.gridstore import write_gridded  # noqa: E402
from obscast.components.store.obstable import ObsTable, split_windows  # noqa: E402
from obscast.components.obs.qc import apply_qc  # noqa: E402
from obscast.components.obs.readers.bufr import BUFR_KEYS, read_observations  # noqa: E402
from obscast.components.obs.readers.grib import read_grib  # noqa: E402
from obscast.components.store.storage import Store  # noqa: E402

SAMPLES = ROOT / "data" / "samples"
TARGET_RATIO = 1.3
WINDOW = pd.Timedelta(hours=6)  # the default IngestConfig.window
ROW_CHUNK = 65536  # the default IngestConfig.row_chunk

#: (case name, kind, file); kind "grib" for gridded files.
CASES: list[tuple[str, str, str]] = [
    ("synop", "synop", "perf_synop.bufr"),
    # DWD national feed (307086 + 10-minute reports): obscast selects by qualifier, pdbufr's flat
    # read takes first occurrences (so its values differ; the decode work is comparable)
    ("national", "synop", "synop-dwd-national-10min.bufr"),
    ("temp", "temp", "temp.bufr"),
    ("aircraft", "aircraft", "perf_aircraft.bufr"),
    ("era5", "grib", "era5-levels-members.grib"),
]


@dataclass
class Target:
    """Where both variants write: a local directory or an S3 prefix."""

    label: str
    root: str  # directory or s3://bucket/prefix
    storage_options: dict[str, Any] = field(default_factory=dict)

    def store(self, *parts: str) -> Store:
        return Store("/".join([self.root, *parts]), self.storage_options)

    def url(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def to_zarr_kwargs(self) -> dict[str, Any]:
        return {"storage_options": self.storage_options} if self.root.startswith("s3://") else {}


def _timed(stages: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    stages[name] = time.perf_counter() - t0
    return out


def bare_bufr(kind: str, path: Path, target: Target, run: str) -> tuple[int, dict[str, float]]:
    """pdbufr -> DataFrame -> xarray -> zarr (v3, like obscast's store)."""
    stages: dict[str, float] = {}
    df = _timed(stages, "decode", lambda: pdbufr.read_bufr(str(path), columns=BUFR_KEYS[kind], required_columns=False))
    ds = _timed(stages, "to_xarray", lambda: xr.Dataset.from_dataframe(df))
    url = target.url("bare", run + ".zarr")
    _timed(stages, "to_zarr", lambda: ds.to_zarr(url, mode="w", zarr_format=3, consolidated=False, **target.to_zarr_kwargs()))
    return len(df), stages


def ours_bufr(kind: str, path: Path, target: Target, run: str) -> tuple[int, dict[str, float]]:
    """read_observations -> apply_qc -> windowed writes of accepted and quarantined rows (as flows/ingest.py)."""
    stages: dict[str, float] = {}
    table = _timed(stages, "read", lambda: read_observations(kind, path))
    qc = _timed(stages, "qc", lambda: apply_qc(table, kind, source=path.name))
    store = target.store("ours", run)

    def write() -> None:
        for table_path, frame in ((f"obs/{kind}.zarr", qc.accepted), (f"quarantine/{kind}.zarr", qc.rejected)):
            ObsTable(store, table_path, ROW_CHUNK).write_windows(split_windows(frame, WINDOW))

    _timed(stages, "write", write)
    return len(table), stages


def bare_grib(path: Path, target: Target, run: str) -> tuple[int, dict[str, float]]:
    """cfgrib -> zarr (no index file is written next to the sample)."""
    stages: dict[str, float] = {}
    ds = _timed(stages, "open", lambda: xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""}))
    url = target.url("bare", run + ".zarr")
    _timed(stages, "to_zarr", lambda: ds.to_zarr(url, mode="w", zarr_format=3, consolidated=False, **target.to_zarr_kwargs()))
    n = sum(ds[v].size for v in ds.data_vars)
    ds.close()
    return n, stages


def ours_grib(path: Path, target: Target, run: str) -> tuple[int, dict[str, float]]:
    """read_grib -> write_gridded (digest, chunking, idempotence check)."""
    stages: dict[str, float] = {}
    ds = _timed(stages, "read", lambda: read_grib(path))
    _timed(stages, "write", lambda: write_gridded(target.store("ours", run), "era5", ds))
    return sum(ds[v].size for v in ds.data_vars), stages


@dataclass
class Result:
    case: str
    target: str
    rows_bare: int
    rows_ours: int
    bare: list[float]
    ours: list[float]
    bare_stages: list[dict[str, float]]
    ours_stages: list[dict[str, float]]

    @property
    def bare_s(self) -> float:
        return statistics.median(self.bare)

    @property
    def ours_s(self) -> float:
        return statistics.median(self.ours)

    @property
    def ratio(self) -> float:
        return self.ours_s / self.bare_s


def _median_stages(stages: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(s[k] for s in stages) for k in stages[0]}


def run_case(case: str, kind: str, filename: str, target: Target, repeats: int) -> Result:
    path = SAMPLES / filename
    if kind == "grib":
        bare_fn: Callable[[str], tuple[int, dict]] = lambda run: bare_grib(path, target, run)  # noqa: E731
        ours_fn: Callable[[str], tuple[int, dict]] = lambda run: ours_grib(path, target, run)  # noqa: E731
    else:
        bare_fn = lambda run: bare_bufr(kind, path, target, run)  # noqa: E731
        ours_fn = lambda run: ours_bufr(kind, path, target, run)  # noqa: E731
    res = Result(case, target.label, 0, 0, [], [], [], [])
    for rep in range(repeats):
        # Alternate the order so that warm caches and background load hit both variants alike.
        order = [("bare", bare_fn), ("ours", ours_fn)]
        if rep % 2:
            order.reverse()
        for variant, fn in order:
            gc.collect()
            t0 = time.perf_counter()
            rows, stages = fn(f"{case}-{rep}")
            elapsed = time.perf_counter() - t0
            if variant == "bare":
                res.rows_bare, res.bare, res.bare_stages = rows, res.bare + [elapsed], res.bare_stages + [stages]
            else:
                res.rows_ours, res.ours, res.ours_stages = rows, res.ours + [elapsed], res.ours_stages + [stages]
            print(f"  {target.label:5s} {case:8s} rep {rep + 1}/{repeats} {variant:4s} {elapsed:7.2f} s  "
                  + " ".join(f"{k}={v:.2f}" for k, v in stages.items()), flush=True)
    return res


def _fmt_stages(stages: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.2f}" for k, v in stages.items())


def report(results: list[Result]) -> None:
    print()
    header = f"{'store':5s} {'case':8s} {'rows':>9s} {'bare s':>7s} {'ours s':>7s} {'bare rows/s':>12s} {'ours rows/s':>12s} {'ratio':>6s}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.target:5s} {r.case:8s} {r.rows_ours:9d} {r.bare_s:7.2f} {r.ours_s:7.2f} "
              f"{r.rows_bare / r.bare_s:12,.0f} {r.rows_ours / r.ours_s:12,.0f} {r.ratio:6.2f}")
    for label in dict.fromkeys(r.target for r in results):
        rs = [r for r in results if r.target == label]
        bare, ours = sum(r.bare_s for r in rs), sum(r.ours_s for r in rs)
        bufr = [r for r in rs if r.case != "era5"]
        rows_b = sum(r.rows_bare for r in bufr)
        rows_o = sum(r.rows_ours for r in bufr)
        bare_b = sum(r.bare_s for r in bufr) or float("nan")
        ours_b = sum(r.ours_s for r in bufr) or float("nan")
        print(f"{label:5s} {'overall':8s} {'':9s} {bare:7.2f} {ours:7.2f} {rows_b / bare_b:12,.0f} {rows_o / ours_b:12,.0f} "
              f"{ours / bare:6.2f}   (rows/s: BUFR only; target ratio <= {TARGET_RATIO})")
    print("\nMedian time per stage (s):")
    for r in results:
        print(f"  {r.target:5s} {r.case:8s} bare: {_fmt_stages(_median_stages(r.bare_stages)):40s} "
              f"ours: {_fmt_stages(_median_stages(r.ours_stages))}")
    print("\nrows: observation-table rows (BUFR; bare counts pdbufr rows, the same number) or grid values "
          "(GRIB: fields x points).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant and file (median is reported)")
    parser.add_argument("--s3", action="store_true", help="also run against a local SeaweedFS S3 server")
    parser.add_argument("--no-local", action="store_true", help="skip the local-disk runs")
    parser.add_argument("--files", nargs="*", choices=[c for c, _, _ in CASES], help="cases to run (default: all)")
    parser.add_argument("--max-ratio", type=float, default=None, help="exit 1 if an overall ratio exceeds this")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if not args.files or c[0] in args.files]

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="obscast-bench-") as tmp:
        if not args.no_local:
            target = Target("local", str(Path(tmp) / "local"))
            for case in cases:
                results.append(run_case(*case, target, args.repeats))
        if args.s3:
            from obscast.infra.prefect_server import temporary_env
            from obscast.infra.s3_server import DEV_KEY, DEV_SECRET, s3_server

            keys = {k: os.environ.get(k, d) for k, d in (("AWS_ACCESS_KEY_ID", DEV_KEY), ("AWS_SECRET_ACCESS_KEY", DEV_SECRET))}
            with temporary_env(**keys), s3_server(Path(tmp) / "seaweedfs") as endpoint:
                options = {"endpoint_url": endpoint}
                Store("s3://obscast-bench", options).fs.mkdir("obscast-bench")
                target = Target("s3", "s3://obscast-bench/run", options)
                for case in cases:
                    results.append(run_case(*case, target, args.repeats))
    report(results)
    if args.json:
        args.json.write_text(json.dumps([{**r.__dict__, "ratio": r.ratio} for r in results], indent=2))
    if args.max_ratio is not None:
        worst = max(
            sum(r.ours_s for r in results if r.target == t) / sum(r.bare_s for r in results if r.target == t)
            for t in {r.target for r in results}
        )
        return 1 if worst > args.max_ratio else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
