"""The stack on PostgreSQL (``python -m obscast.infra.stack start --database postgres``): a real
PostgreSQL 15 cluster started and stopped by the stack holds Prefect's tables, and obscast's
deployments served by ``obscast serve`` run on it: forecast and verify runs triggered through the
API complete, publish their artifacts, and their runs are rows of PostgreSQL's ``flow_run`` table."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from obscast.infra.prefect_server import free_port, postgres_pid, stop_process_group
from tests.conftest import SAMPLES_CONFIG

REPO = Path(__file__).resolve().parents[2]


def _stack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "obscast.infra.stack", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}, timeout=400)


def _query(state: dict, sql: str, *args):
    """Rows of ``sql`` on the stack's ``prefect`` database (asyncpg, the cluster's password)."""
    import asyncpg

    pg_dir = Path(state["database"]["dir"])
    password = (pg_dir / "password").read_text().strip()

    async def fetch():
        conn = await asyncpg.connect(user="postgres", password=password, host="127.0.0.1", port=state["database"]["port"], database="prefect")
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())


@pytest.fixture(scope="module")
def pg_stack():
    """A stack on PostgreSQL in a fresh directory under /tmp (the ``postgres`` user, which the
    server runs as when we are root, cannot enter pytest's private temporary directories)."""
    from obscast.infra.stack import read_state

    stack_dir = Path(tempfile.mkdtemp(prefix="obscast-pg-stack-"))
    stack_dir.chmod(0o711)
    args = ["--dir", str(stack_dir), "--prefect-port", str(free_port()), "--s3-port", str(free_port())]
    try:
        started = _stack("start", *args, "--database", "postgres")
        assert started.returncode == 0, started.stdout + started.stderr
        assert "database: PostgreSQL on 127.0.0.1:" in started.stdout
        yield read_state(stack_dir)
    finally:
        stopped = _stack("stop", "--dir", str(stack_dir))
        shutil.rmtree(stack_dir, ignore_errors=True)
    assert stopped.returncode == 0 and stopped.stdout.strip() == "stopped", stopped.stdout + stopped.stderr


def test_stack_puts_prefect_on_postgres(pg_stack):
    state = pg_stack
    assert state["database"]["kind"] == "postgres"
    pid = postgres_pid(Path(state["database"]["dir"]))
    assert pid is not None
    status = _stack("status", "--dir", str(Path(state["database"]["dir"]).parent))
    assert status.returncode == 0 and f"postgres up  127.0.0.1:{state['database']['port']}" in status.stdout, status.stdout
    # Prefect migrated its schema into the cluster's "prefect" database, and wrote no SQLite file.
    tables = {r["tablename"] for r in _query(state, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"alembic_version", "flow_run", "deployment", "artifact"} <= tables
    assert not (Path(state["prefect"]["home"]) / "prefect.db").exists()
    # Only loopback, and only with the password.
    assert [r["setting"] for r in _query(state, "SELECT setting FROM pg_settings WHERE name = 'listen_addresses'")] == ["127.0.0.1"]
    assert {r["auth_method"] for r in _query(state, "SELECT auth_method FROM pg_hba_file_rules")} == {"scram-sha-256"}


@pytest.mark.slow
def test_deployments_run_on_postgres(pg_stack, pipeline_run, tmp_path):
    """``obscast serve`` against the PostgreSQL-backed server: forecast and verify runs of the
    deployments complete, publish their artifacts, and are stored in PostgreSQL."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    state = pg_stack
    store, _ = pipeline_run
    api = state["prefect"]["url"]
    log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "obscast.flows.cli", "serve", "--config", str(SAMPLES_CONFIG), "--paused-schedules",
            "--deployment", "forecast/every-6h", "--deployment", "verify/daily"]
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PYTHONPATH": str(REPO)}
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
            deadline = time.monotonic() + 150
            while {d.name for d in client.read_deployments()} < {"every-6h", "daily"}:
                assert proc.poll() is None and time.monotonic() < deadline, f"serve did not register the deployments:\n{log.read_text()[-3000:]}"
                time.sleep(1)
            params = {"store": str(store)}
            started = {"forecast": run_deployment("forecast/every-6h", parameters=params, timeout=0),
                       "verify": run_deployment("verify/daily", parameters=params, timeout=0)}
            deadline = time.monotonic() + 300
            while True:
                runs = {k: client.read_flow_run(r.id) for k, r in started.items()}
                if all(r.state.is_final() for r in runs.values()):
                    break
                assert time.monotonic() < deadline, f"runs not finished: {runs}\n{log.read_text()[-3000:]}"
                time.sleep(2)
            artifacts = {k: {a.key for a in client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[r.id])))}
                         for k, r in runs.items()}
    finally:
        stop_process_group(proc.pid, signal.SIGINT, timeout=30)
    assert all(r.state.is_completed() for r in runs.values()), {k: r.state for k, r in runs.items()}
    assert "forecast-products" in artifacts["forecast"] and "verification-scores" in artifacts["verify"]
    rows = _query(state, "SELECT id, state_type FROM flow_run WHERE id = ANY($1::uuid[])", [r.id for r in runs.values()])
    assert sorted(str(r["state_type"]) for r in rows) == ["COMPLETED", "COMPLETED"]
