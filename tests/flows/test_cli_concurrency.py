"""Two ``obscast`` commands started at the same instant on a new machine (a fresh PREFECT_HOME, no
PREFECT_API_URL) both succeed: their temporary Prefect servers no longer race on the SQLite
migrations ("no such table", "Application startup failed")."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

# Each command waits for the start signal after Python has started, so both reach Prefect together.
LAUNCHER = r"""
import sys, time
from pathlib import Path
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.002)
from obscast.flows.cli import main
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.slow  # two temporary Prefect servers: about 50 s of CPU
def test_two_commands_at_once_with_a_fresh_prefect_home(tmp_path):
    """Two ``obscast ingest`` commands started together with one new PREFECT_HOME both run their
    flow to completion, exit 0 and print no traceback. Their configuration has no source (the
    flow runs, ingests nothing): the race is in Prefect's start, not in the ingest."""
    home = tmp_path / "prefect-home"  # does not exist yet: a new machine
    config = tmp_path / "tiny.yaml"
    config.write_text("sources: {}\n")
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OBSCAST_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", OMP_NUM_THREADS="1")
    go = tmp_path / "go"
    procs = []
    for k in range(2):
        args = [sys.executable, str(launcher), str(tmp_path / f"ready{k}"), str(go),
                "ingest", "--config", str(config), "--store", str(tmp_path / f"store{k}")]
        procs.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path))
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{k}").exists() for k in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    go.touch()
    results = [p.communicate(timeout=600) for p in procs]
    for k, (p, (out, err)) in enumerate(zip(procs, results)):
        assert "Traceback" not in err, err[-5000:]
        assert p.returncode == 0, err[-5000:]
        assert "Finished in state Completed(" in out + err, (out + err)[-5000:]


def test_a_server_that_does_not_start_is_one_line_asking_to_retry(tmp_path):
    """When the temporary server does not come up in time (a 1 s startup timeout: it needs several
    seconds), the command ends with one line saying to retry, exit status 1, no traceback."""
    config = tmp_path / "tiny.yaml"
    config.write_text("sources: {}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OBSCAST_"))}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    out = subprocess.run([sys.executable, "-m", "obscast.flows.cli", "ingest", "--config", str(config), "--store", str(tmp_path / "store")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("obscast: error: Prefect's temporary server") and "did not start" in last and "retry" in last, out.stderr[-3000:]
    assert not (tmp_path / "store").exists()  # no flow ran
