"""Faults in the middle of a window's write: the backfill process killed with SIGKILL, and the S3
server (SeaweedFS) killed and restarted on the same data directory and port. After a rerun the
store equals an uninterrupted run's, byte for byte in values and row counts.

"Mid-window" is proven, not assumed: the test polls the store until a table holds rows beyond
its index's committed count (an append under way), kills at that moment, and checks afterwards
that those uncommitted rows are really there when the rerun starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from contextlib import ExitStack

import pytest

from obscast.components.store.obstable import ObsTable
from obscast.components.store.storage import Store
from tests.flows.test_backfill import END, N_WINDOWS, START, assert_same_store, backfill_cmd, clean_run, shared_data, write_config

OBS = "obs/synop.zarr"


def uncommitted_rows(store: Store) -> int:
    """Rows stored beyond the obs table's committed count (0 when none, or before its first commit)."""
    table = ObsTable(store, OBS)
    try:
        index = table.index()
        if not index:
            return 0
        committed = sum(w["rows"] for w in index.values())
        lengths = [store.read_json(OBS, name, "zarr.json")["shape"][0] for name in table.columns()]
    except (FileNotFoundError, KeyError, ValueError):
        return 0  # a metadata object being replaced
    return max(lengths) - committed


def wait_mid_window(writer: subprocess.Popen | threading.Thread, store: Store, timeout: float = 120.0) -> int:
    """Poll until an append is under way; returns the uncommitted row count seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        extra = uncommitted_rows(store)
        if extra > 0:
            return extra
        if isinstance(writer, threading.Thread) and not writer.is_alive():
            pytest.fail("the backfill ended before a window's write was caught")
        if isinstance(writer, subprocess.Popen) and writer.poll() is not None:
            pytest.fail(f"the backfill ended (status {writer.returncode}) before a window's write was caught: {writer.stderr.read()[-2000:]}")
        time.sleep(0.005)
    pytest.fail("no append under way within the timeout")


@pytest.fixture(scope="module")
def slow_config(tmp_path_factory):
    """The test data with 16-row chunks: an append writes about a thousand chunk files, so it
    lasts long enough to be caught on local disk (on S3 256-row chunks are enough)."""
    raw, _ = shared_data(tmp_path_factory)
    return write_config(tmp_path_factory.mktemp("faults") / "slow.yaml", raw, row_chunk=16)


def test_backfill_killed_mid_window_then_rerun_equals_clean_run(prefect_api, tmp_path_factory, slow_config, tmp_path):
    from obscast.flows.backfill import backfill_flow

    clean_store, _ = clean_run(tmp_path_factory)
    store = Store(str(tmp_path / "store"))
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    proc = subprocess.Popen(backfill_cmd(slow_config, store.root), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = wait_mid_window(proc, store)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert seen > 0 and uncommitted_rows(store) > 0  # killed with a window half written
    committed = len(ObsTable(store, OBS).index())
    assert committed < N_WINDOWS

    result = backfill_flow(source="synop", start=START, end=END, config_path=str(slow_config), store=store.root)
    assert result["counts"]["skipped"] == committed and result["counts"]["written"] == N_WINDOWS - committed
    assert uncommitted_rows(store) == 0
    assert_same_store(store, Store(str(clean_store)))


def test_s3_server_killed_mid_write_and_restarted(prefect_api, tmp_path_factory, tmp_path):
    from obscast.flows.backfill import backfill_flow
    from obscast.infra.prefect_server import free_port, temporary_env
    from obscast.infra.s3_server import DEV_KEY, DEV_SECRET, s3_server

    clean_store, _ = clean_run(tmp_path_factory)
    raw, _ = shared_data(tmp_path_factory)
    config = write_config(tmp_path / "s3.yaml", raw, row_chunk=256)  # fewer, larger objects: a faster test
    keys = {k: os.environ.get(k, d) for k, d in (("AWS_ACCESS_KEY_ID", DEV_KEY), ("AWS_SECRET_ACCESS_KEY", DEV_SECRET))}
    data_dir, port = tmp_path / "seaweedfs", free_port()
    outcome: dict[str, BaseException | dict] = {}

    def backfill(options: dict) -> None:
        try:
            with temporary_env(OBSCAST_STORAGE_OPTIONS=json.dumps(options)):
                outcome["result"] = backfill_flow(source="synop", start=START, end=END, config_path=str(config), store="s3://obscast-faults/run")
        except BaseException as exc:  # noqa: BLE001 - examined below
            outcome["error"] = exc

    with temporary_env(**keys):
        with ExitStack() as server:
            endpoint = server.enter_context(s3_server(data_dir, port))
            # One botocore attempt per request: the writer gives up soon after the server's death.
            options = {"endpoint_url": endpoint, "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 5}}
            store = Store("s3://obscast-faults/run", options)
            store.fs.mkdir("obscast-faults")
            writer = threading.Thread(target=backfill, args=(options,))
            writer.start()
            seen = wait_mid_window(writer, store, timeout=180)
        # The server is gone (SIGKILL) in the middle of that append; the backfill fails on its own.
        writer.join(timeout=120)
        assert not writer.is_alive(), "the backfill did not give up within 120 s of the S3 server's death"
        error = outcome.get("error")
        assert error is not None and "backfill synop: window" in str(error) and "run the same backfill again to resume" in str(error), outcome

        with s3_server(data_dir, port) as endpoint:  # the same data directory and port
            store = Store("s3://obscast-faults/run", {"endpoint_url": endpoint})
            assert seen > 0 and uncommitted_rows(store) > 0  # the half-written window survived the restart
            committed = len(ObsTable(store, OBS).index())
            with temporary_env(OBSCAST_STORAGE_OPTIONS=json.dumps({"endpoint_url": endpoint})):
                result = backfill_flow(source="synop", start=START, end=END, config_path=str(config), store=store.root)
            assert result["counts"]["skipped"] == committed and result["counts"]["written"] == N_WINDOWS - committed
            assert uncommitted_rows(store) == 0
            assert_same_store(store, Store(str(clean_store)))


# ------------------------------------------------------------------------------------------
# A bad file never blocks a feed: empty and truncated files among good ones
# ------------------------------------------------------------------------------------------
from pathlib import Path

import pandas as pd

from obscast.components.errors import InputError

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
GOOD = ["synop-307080-307086-307096.bufr", "synop-307086.bufr"]


def _feed(tmp_path: Path) -> list[str]:
    """An hourly-feed-like directory: a good file, an empty one, a truncated one, a good one."""
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "a.bufr").write_bytes((SAMPLES / GOOD[0]).read_bytes())
    (feed / "b_empty.bufr").write_bytes(b"")
    data = (SAMPLES / "synop-dwd-national-10min.bufr").read_bytes()
    (feed / "c_truncated.bufr").write_bytes(data[: len(data) // 2])  # ends inside a message
    (feed / "d.bufr").write_bytes((SAMPLES / GOOD[1]).read_bytes())
    return [str(feed / n) for n in ("a.bufr", "b_empty.bufr", "c_truncated.bufr", "d.bufr")]


def test_read_tolerant_quarantines_undecodable_files(tmp_path):
    from obscast.components.obs.readers.bufr import read_observations
    from obscast.components.store.catalogue import read_tolerant

    paths = _feed(tmp_path)
    table, bad = read_tolerant("synop", paths)
    expected = pd.concat([read_observations("synop", paths[0]), read_observations("synop", paths[3])], ignore_index=True)
    pd.testing.assert_frame_equal(table, expected)
    assert [b["path"] for b in bad] == paths[1:3]
    assert "no decodable message" in bad[0]["reason"] and bad[0]["reason"].startswith(paths[1])
    assert "a complete BUFR message" in bad[1]["reason"] and bad[1]["field"] == "BUFR message"
    with pytest.raises(InputError, match="b_empty.bufr"):
        read_tolerant("synop", paths, strict=True)  # fail-fast on the first bad file
    with pytest.raises(InputError, match="field 'file'"):
        read_tolerant("synop", paths + [str(tmp_path / "nowhere.bufr")])  # a missing file is no bad file
    with pytest.raises(InputError, match="b_empty.bufr"):
        read_tolerant("synop", paths[1:3])  # nothing readable: the source fails


def test_ingest_stores_good_files_and_quarantines_bad_ones(prefect_api, tmp_path):
    import yaml
    from prefect.client.orchestration import get_client  # noqa: F401  (the server of prefect_api)

    from obscast.components.obs.qc import apply_qc
    from obscast.components.obs.readers.bufr import read_observations
    from obscast.flows import cli
    from obscast.flows.ingest import ingest_flow

    paths = _feed(tmp_path)
    store = tmp_path / "store"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"store": str(store), "sources": {"synop": {"kind": "synop", "paths": paths}}, "gridded": {}}))

    state = ingest_flow(config_path=str(config), return_state=True)
    summary = state.result()
    s = summary["sources"]["synop"]
    good = pd.concat([read_observations("synop", p) for p in (paths[0], paths[3])], ignore_index=True)
    assert s["qc"]["total"] == len(good) and s["qc"]["accepted"] == apply_qc(good, "synop").counts["accepted"]
    assert len(ObsTable(Store(str(store)), "obs/synop.zarr").read()) == s["qc"]["accepted"]
    assert [b["path"] for b in s["bad_files"]] == paths[1:3]
    record = json.loads((store / "quarantine" / "synop.files.json").read_text())
    assert sorted(record["files"]) == sorted(paths[1:3])
    assert "truncated" in record["files"][paths[2]]["reason"]
    assert "2 file(s) quarantined whole" in state.message  # the run's state message (Prefect UI)

    # --strict restores fail-fast: one-line error naming the first bad file, exit status 1
    assert cli.main(["ingest", "--strict", "--config", str(config)]) == 1
