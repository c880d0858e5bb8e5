"""The deployments of infra/prefect.yaml served by ``obscast serve`` on a real Prefect server:
schedules and concurrency limits as declared, forecast and verify runs triggered through the API
complete and publish their artifacts, and a failing run ends with obscast's one-line message."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from obscast.infra.deploy import read_deployments
from tests.conftest import SAMPLES_CONFIG

REPO = Path(__file__).resolve().parents[2]


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}" + (f"; serve log:\n{log.read_text()[-3000:]}" if log else ""))


@pytest.fixture(scope="module")
def served(pipeline_run, prefect_api, tmp_path_factory):
    """``obscast serve`` (in a subprocess, started from a directory outside the repository) with
    every deployment of infra/prefect.yaml whose flow file exists, schedules paused, samples
    configuration as the default parameter. Yields ``(store, specs)``."""
    from prefect.client.orchestration import get_client

    store, _ = pipeline_run
    specs = [s for s in read_deployments() if s.source_file.is_file()]
    work = tmp_path_factory.mktemp("serve")
    log = work / "serve.log"
    args = [sys.executable, "-m", "obscast.flows.cli", "serve", "--config", str(SAMPLES_CONFIG), "--paused-schedules"]
    for s in specs:
        args += ["--deployment", f"{s.module.rsplit('.', 1)[-1]}/{s.name}"]
    env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PYTHONPATH": str(REPO)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def registered():
            with get_client(sync_client=True) as client:
                have = {(d.name, d.entrypoint) for d in client.read_deployments()}
            return all((s.name, f"{s.module}.{s.function}") in have for s in specs)

        _wait(registered, 150, "obscast serve to register the deployments", proc, log)
        yield store, specs
    finally:
        # serve pauses its schedules and stops (in about a second when idle); whatever of its
        # flow-run processes is still finishing is killed after 5 s
        from obscast.infra.prefect_server import stop_process_group

        stop_process_group(proc.pid, signal.SIGINT, timeout=5)


@pytest.fixture(scope="module")
def runs(served, tmp_path_factory):
    """A forecast run, a verify run and an ingest run of a configuration naming a missing BUFR
    file, triggered together through the API; returns the final flow runs by label."""
    import yaml
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    store, _ = served
    bad = tmp_path_factory.mktemp("bad-config")
    missing = bad / "nowhere.bufr"
    (bad / "config.yaml").write_text(yaml.safe_dump({"store": str(bad / "store"), "sources": {"synop": {"kind": "synop", "paths": [str(missing)]}}}))
    params = {"store": str(store)}
    started = {
        "forecast": run_deployment("forecast/every-6h", parameters=params, timeout=0),
        "verify": run_deployment("verify/daily", parameters=params, timeout=0),
        "ingest_bad": run_deployment("ingest/hourly", parameters={"config_path": str(bad / "config.yaml")}, timeout=0),
    }
    with get_client(sync_client=True) as client:
        def final():
            now = {k: client.read_flow_run(r.id) for k, r in started.items()}
            return now if all(r.state and r.state.is_final() for r in now.values()) else None

        return _wait(final, 240, "the forecast and verify runs to finish")


def test_deployments_match_prefect_yaml(served):
    from prefect.client.orchestration import get_client

    _, specs = served
    names = {s.module.rsplit(".", 1)[-1] + "/" + s.name for s in specs}
    assert {"ingest/hourly", "forecast/every-6h", "verify/daily"} <= names
    with get_client(sync_client=True) as client:
        for s in specs:
            flow_name = s.module.rsplit(".", 1)[-1]
            d = client.read_deployment_by_name(f"{flow_name}/{s.name}")
            assert sorted(x.schedule.cron for x in d.schedules) == sorted(s.crons)
            assert all(x.schedule.timezone == "UTC" and not x.active for x in d.schedules)  # --paused-schedules
            assert d.global_concurrency_limit is not None and d.global_concurrency_limit.limit == 1, s.name
            assert d.parameters["config_path"] == str(SAMPLES_CONFIG)  # serve --config sets the default
    # The schedules of the file itself (retrain weekly, backfill by hand only).
    file_specs = {s.name: s for s in read_deployments()}
    assert file_specs["hourly"].crons == ["0 * * * *"] and file_specs["every-6h"].crons == ["20 */6 * * *"]
    assert file_specs["daily"].crons == ["40 3 * * *"] and file_specs["weekly"].crons == ["0 4 * * 0"]
    assert file_specs["weekly"].entrypoint == "flows/retrain.py:retrain_flow" and file_specs["weekly"].concurrency_limit == 1
    assert file_specs["on-demand"].entrypoint == "flows/backfill.py:backfill_flow" and file_specs["on-demand"].crons == []


def test_forecast_and_verify_runs_publish_artifacts(runs, served):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    store, _ = served
    assert runs["forecast"].state.is_completed(), runs["forecast"].state
    assert runs["verify"].state.is_completed(), runs["verify"].state
    assert runs["verify"].parameters == {"config_path": str(SAMPLES_CONFIG), "store": str(store), "version": None}
    with get_client(sync_client=True) as client:
        def artifacts(run):
            return {a.key: a.data for a in client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))}

        scores = artifacts(runs["verify"])["verification-scores"]
        products = artifacts(runs["forecast"])["forecast-products"]
    # The score table: every system, a channel, finite RMSE values for the trained version.
    assert "| channel | lead_time | model | persistence | climatology |" in scores
    version = re.search(r"obscast-era5 (v\d{4}): latitude-weighted", scores).group(1)  # the champion (v0001 unless promoted)
    assert "geopotential_500hPa" in scores
    row = next(line for line in scores.splitlines() if line.startswith("| geopotential_500hPa [m2 s-2] | 12 h |"))
    assert all(float(x) > 0 for x in row.strip("|").split("|")[2:5])
    # The plot is embedded: it is the very PNG stored next to the scores.
    embedded = re.search(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", scores)
    assert embedded, "no inline PNG in the score artifact"
    assert base64.b64decode(embedded.group(1)) == (store / "scores/obscast-era5" / version / "rmse.png").read_bytes()
    # The forecast artifact lists the products, which exist.
    urls = re.findall(r"\| `([^`]+\.zarr)` \|", products)
    assert len(urls) == 2 and all(Path(u).is_dir() for u in urls), products
    assert any(u.endswith(".stations.zarr") for u in urls)


def test_failed_run_states_the_obscast_error(runs):
    bad = runs["ingest_bad"]
    assert bad.state.is_failed(), bad.state
    # The state message carries obscast's one-line error: the file and what was expected.
    assert "nowhere.bufr" in bad.state.message and "expected" in bad.state.message, bad.state.message
    assert "Traceback" not in bad.state.message


def test_io_tasks_retry_transient_errors_only(prefect_api, tmp_path):
    """Store tasks retry an OSError (with backoff) but not an ObscastError, which would fail again."""
    import xarray as xr
    from prefect import flow

    from obscast.components.config import load_config
    from obscast.components.errors import ObscastError
    from obscast.flows.common import IO_RETRIES, task, write_products

    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store should be")
    config = load_config(SAMPLES_CONFIG, {"store": str(blocker / "store")})
    attempts: list[str] = []

    @task(**{**IO_RETRIES, "retry_delay_seconds": 0})
    def refuse() -> None:
        attempts.append("obscast")
        raise ObscastError("bad input: retrying cannot help")

    @flow
    def both():
        failed_io = write_products.with_options(retry_delay_seconds=0)(
            config, ("scores",), {"scores.zarr": xr.Dataset({"x": ("n", [1.0])})}, return_state=True)
        failed_input = refuse(return_state=True)
        return failed_io, failed_input

    failed_io, failed_input = both()
    assert failed_io.is_failed() and failed_input.is_failed()
    assert attempts == ["obscast"]  # no retry
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_task_run(failed_io.state_details.task_run_id)
    assert run.run_count == 1 + IO_RETRIES["retries"]  # the I/O error was retried
