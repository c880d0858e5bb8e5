"""Load benchmark: about 20 concurrent flow runs on a Prefect server backed by PostgreSQL.

What it does, in one process tree:

1. starts a PostgreSQL 15 cluster and a Prefect server on it (``infra.prefect_server``:
   ``postgres_server`` + ``prefect_server``), on free loopback ports in a temporary directory;
2. prepares a store through that server (``pipeline`` flow: ingest, train ``--epochs`` (1),
   forecast, verify) from ``--config`` (default ``configs/samples.yaml``: the real ERA5 and
   SYNOP/TEMP/aircraft sample files), then copies it once per run (the runs of one deployment
   write the same paths: each gets its own store, as separate experiments would);
3. serves the ``forecast/every-6h``, ``verify/daily`` and ``backfill/on-demand`` deployments of
   ``infra/prefect.yaml`` (their concurrency limits dropped, so the runs overlap) from one
   runner process (``prefect.serve(..., limit=--limit)``, what ``obscast serve --limit`` runs);
4. creates ``--runs`` flow runs at once (default 20: 8 forecasts, 6 verifications, 6 backfills
   of a whole source, its observation table removed from the copy first) and, while they go, times Prefect API read calls from a client thread
   (``read_flow_runs(limit=100)``, back to back with a 0.2 s pause), until every run is final
   or ``--timeout`` seconds (1500) pass (then the rest are cancelled and counted as not finished).

It prints the API latency p50/p95/max while idle (before the runs) and under load, the runs
completed, failed for server-side reasons (a 5xx answer, a lost or timed-out connection to the
API, a database error: the target is 0), failed otherwise, crashed and not finished, and the
server's own logged errors.

Usage::

    .venv/bin/python benchmarks/load_benchmark.py [--runs 20] [--limit 20] [--timeout 1500] [--config FILE] [--json FILE]

Exit status 1 if a run failed for a server-side reason or did not finish. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLES_CONFIG = ROOT / "configs" / "samples.yaml"
DEPLOYMENTS = ("forecast/every-6h", "verify/daily", "backfill/on-demand")
#: A failure message naming the API or its database: the server, not the flow, failed the run.
SERVER_SIDE = re.compile(r"HTTPStatusError|Server error|Internal Server Error|\b50[0-4]\b|ReadTimeout|ConnectTimeout|ConnectError|"
                         r"RemoteProtocolError|PoolTimeout|asyncpg|sqlalchemy|database|Application startup failed", re.I)


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linear interpolation (numpy's default)."""
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def plan(n_runs: int, sources: list[str]) -> list[tuple[str, str, dict]]:
    """``(label, deployment, extra parameters)`` of each run: 40 % forecasts, 30 % verifications,
    the rest backfills of ``sources`` in turn."""
    n_forecast = round(0.4 * n_runs)
    n_verify = round(0.3 * n_runs)
    runs = [(f"forecast-{i}", "forecast/every-6h", {}) for i in range(n_forecast)]
    runs += [(f"verify-{i}", "verify/daily", {}) for i in range(n_verify)]
    runs += [(f"backfill-{i}", "backfill/on-demand", {"source": sources[i % len(sources)]}) for i in range(n_runs - n_forecast - n_verify)]
    return runs


def backfill_range(store: Path, source: str, window: str) -> tuple[str, str]:
    """``(start, end)`` covering every dated window of ``obs/<source>.zarr`` in the prepared store."""
    import pandas as pd

    keys = [k for k in json.loads((store / "obs" / f"{source}.zarr.index.json").read_text())["windows"] if k != "undated"]
    ends = sorted(pd.Timestamp(k) for k in keys)
    return (ends[0] - pd.Timedelta(window)).isoformat(), ends[-1].isoformat()


def serve_main(config: str, limit: int) -> None:
    """The runner process: serve the deployments (no concurrency limits) until SIGINT."""
    import dataclasses

    from prefect import serve

    from obscast.infra.deploy import read_deployments, runner_deployment, select

    specs = [dataclasses.replace(s, concurrency_limit=None) for s in select(read_deployments(), list(DEPLOYMENTS))]
    serve(*[runner_deployment(s, {"config_path": config}, paused_schedules=True) for s in specs], limit=limit)


class LatencyProbe(threading.Thread):
    """Time ``read_flow_runs(limit=100)`` back to back (``pause`` s apart) until stopped."""

    def __init__(self, pause: float = 0.2):
        super().__init__(daemon=True)
        self.pause, self.seconds, self.errors = pause, [], []
        self.stopping = threading.Event()

    def run(self) -> None:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            while not self.stopping.is_set():
                t0 = time.perf_counter()
                try:
                    client.read_flow_runs(limit=100)
                    self.seconds.append(time.perf_counter() - t0)
                except Exception as exc:  # an API error under load is what we measure
                    self.errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                self.stopping.wait(self.pause)

    def stop(self) -> None:
        self.stopping.set()
        self.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="flow runs created at once (default 20)")
    parser.add_argument("--limit", type=int, default=20, help="most flow runs the runner executes at a time (default 20)")
    parser.add_argument("--timeout", type=float, default=1500, help="seconds the runs may take in all (default 1500)")
    parser.add_argument("--config", default=str(SAMPLES_CONFIG), help="obscast configuration of the runs (default configs/samples.yaml)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs of the prepared model (default 1)")
    parser.add_argument("--json", default=None, help="write the measurements to this file")
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)  # internal: the runner process
    args = parser.parse_args(argv)
    if args.serve:
        serve_main(args.serve, args.limit)
        return 0
    if not 1 <= args.runs <= 60:
        parser.error("--runs: expected 1 to 60 (the benchmark is bounded)")

    from obscast.infra.prefect_server import postgres_server, prefect_server, server_env

    work = Path(tempfile.mkdtemp(prefix="obscast-load-"))
    work.chmod(0o711)  # the postgres user (when we are root) must reach work/postgres
    try:
        with postgres_server(work / "postgres") as db_url, prefect_server(work / "prefect", database_url=db_url, timeout=180) as api:
            os.environ.update(PREFECT_API_URL=api, PREFECT_HOME=server_env(work / "prefect")["PREFECT_HOME"],
                              PREFECT_SERVER_ANALYTICS_ENABLED="false")
            return run_load(args, work, api)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_load(args: argparse.Namespace, work: Path, api: str) -> int:
    # Prefect is imported only now, with PREFECT_API_URL pointing at the server on PostgreSQL.
    from prefect.client.orchestration import get_client

    from obscast.flows.pipeline import pipeline_flow

    from obscast.flows.common import load
    from obscast.infra.prefect_server import stop_process_group

    print(f"Prefect server on PostgreSQL: {api}", flush=True)
    store = work / "store"
    config = Path(args.config).resolve()
    t0 = time.perf_counter()
    pipeline_flow(config_path=str(config), store=str(store), epochs=args.epochs)
    print(f"prepared the store ({config.name}, {args.epochs} epoch(s)) in {time.perf_counter() - t0:.0f} s", flush=True)

    cfg = load(str(config), str(store))
    runs = plan(args.runs, list(cfg.sources))
    params: dict[str, dict] = {}
    for label, deployment, extra in runs:
        target = work / "stores" / label
        shutil.copytree(store, target, ignore=shutil.ignore_patterns("checkpoints"))
        if deployment == "backfill/on-demand":
            source = extra["source"]
            start, end = backfill_range(store, source, str(cfg.ingest.window))
            for table in ("obs", "quarantine"):  # the backfill writes the source's tables again
                shutil.rmtree(target / table / f"{source}.zarr", ignore_errors=True)
                (target / table / f"{source}.zarr.index.json").unlink(missing_ok=True)
            extra = {**extra, "start": start, "end": end}
        params[label] = {"store": str(target), **extra}

    log = work / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_RUNNER_POLL_FREQUENCY": "2", "OMP_NUM_THREADS": "1"}
    with open(log, "wb") as out:
        runner = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve", str(config), "--limit", str(args.limit)],
                                  cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return drive(args, runs, params, runner, log, work, get_client)
    finally:
        stop_process_group(runner.pid, signal.SIGINT, timeout=60)


def drive(args, runs, params, runner, log, work, get_client) -> int:
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        deadline = time.monotonic() + 180
        names = {d.split("/")[1] for d in DEPLOYMENTS}
        while {d.name for d in client.read_deployments()} < names:
            if runner.poll() is not None or time.monotonic() > deadline:
                print(f"the runner did not register the deployments:\n{log.read_text()[-3000:]}", file=sys.stderr)
                return 1
            time.sleep(1)
        ids = {d.name: d.id for d in client.read_deployments()}

        idle = LatencyProbe()
        idle.start()
        time.sleep(10)
        idle.stop()

        probe = LatencyProbe()
        probe.start()
        t0 = time.monotonic()
        created = {label: client.create_flow_run_from_deployment(ids[deployment.split("/")[1]], parameters=params[label])
                   for label, deployment, _ in runs}
        submit_s = time.monotonic() - t0
        print(f"created {len(created)} flow runs in {submit_s:.1f} s; runner limit {args.limit}", flush=True)
        final: dict = {}
        peak_running = 0
        while len(final) < len(created) and time.monotonic() - t0 < args.timeout:
            time.sleep(3)
            now = {label: client.read_flow_run(run.id) for label, run in created.items() if label not in final}
            final.update({k: r for k, r in now.items() if r.state and r.state.is_final()})
            peak_running = max(peak_running, sum(1 for r in now.values() if r.state and r.state.type == StateType.RUNNING))
        wall = time.monotonic() - t0
        probe.stop()
        unfinished = [label for label in created if label not in final]
        for label in unfinished:
            client.set_flow_run_state(created[label].id, Cancelled(message="load benchmark: --timeout reached"), force=True)

    by_type: dict[str, list[str]] = {"completed": [], "failed_server_side": [], "failed_other": [], "crashed": []}
    for label, run in final.items():
        message = run.state.message or ""
        if run.state.is_completed():
            by_type["completed"].append(label)
        elif SERVER_SIDE.search(message):
            by_type["failed_server_side"].append(label)
        elif run.state.type == StateType.CRASHED:
            by_type["crashed"].append(label)
        else:
            by_type["failed_other"].append(label)
    server_log = (work / "prefect" / "server.log").read_text(errors="replace")
    server_errors = [line for line in server_log.splitlines() if re.search(r"\bERROR\b|Traceback", line)]
    durations = [(r.end_time - r.start_time).total_seconds() for r in final.values() if r.start_time and r.end_time]
    result = {
        "runs": len(created), "limit": args.limit, "wall_s": round(wall, 1), "create_s": round(submit_s, 2), "peak_running": peak_running,
        "idle": {"calls": len(idle.seconds), "p50_ms": 1e3 * percentile(idle.seconds, 50), "p95_ms": 1e3 * percentile(idle.seconds, 95)},
        "load": {"calls": len(probe.seconds), "errors": probe.errors, "p50_ms": 1e3 * percentile(probe.seconds, 50),
                 "p95_ms": 1e3 * percentile(probe.seconds, 95), "max_ms": 1e3 * max(probe.seconds, default=float("nan"))},
        "counts": {k: len(v) for k, v in by_type.items()} | {"not_finished": len(unfinished)},
        "labels": {k: v for k, v in by_type.items() if v and k != "completed"} | ({"not_finished": unfinished} if unfinished else {}),
        "messages": {label: (final[label].state.message or "")[:300] for k, v in by_type.items() if k != "completed" for label in v},
        "run_s": {"median": statistics.median(durations) if durations else None, "max": max(durations, default=None)},
        "server_log_errors": len(server_errors),
    }
    ending = "all final after" if not unfinished else f"{len(unfinished)} not final ({' '.join(unfinished)}) at --timeout,"
    print(f"\n{result['runs']} flow runs (forecast {sum(1 for _, d, _ in runs if d.startswith('forecast'))}, "
          f"verify {sum(1 for _, d, _ in runs if d.startswith('verify'))}, backfill {sum(1 for _, d, _ in runs if d.startswith('backfill'))}), "
          f"runner limit {args.limit}, peak {peak_running} running at once; "
          f"{ending} {wall:.0f} s "
          f"(run time median {result['run_s']['median'] or float('nan'):.0f} s, max {result['run_s']['max'] or float('nan'):.0f} s)")
    print(f"API latency read_flow_runs(limit=100)   idle: p50 {result['idle']['p50_ms']:.0f} ms  p95 {result['idle']['p95_ms']:.0f} ms "
          f"({result['idle']['calls']} calls)")
    print(f"                                  under load: p50 {result['load']['p50_ms']:.0f} ms  p95 {result['load']['p95_ms']:.0f} ms  "
          f"max {result['load']['max_ms']:.0f} ms ({result['load']['calls']} calls, {len(probe.errors)} errors)")
    c = result["counts"]
    print(f"runs completed {c['completed']}, failed server-side {c['failed_server_side']}, failed otherwise {c['failed_other']}, "
          f"crashed {c['crashed']}, not finished {c['not_finished']}; server log errors {len(server_errors)}")
    for label, message in result["messages"].items():
        print(f"  {label}: {message}")
    for line in server_errors[:10]:
        print(f"  server: {line[:200]}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 1 if c["failed_server_side"] or c["not_finished"] or probe.errors else 0


if __name__ == "__main__":
    sys.exit(main())
