"""The backfill flow (flows/backfill.py) on small real BUFR files: windows, skips, statuses,
errors, the Dask paths (a local cluster, and an existing scheduler with two workers started
here) and two backfills at once on one store.

The data: three daily SYNOP BUFR files written with obscast's BUFR writer (150 stations every
3 hours, 2000-01-01 to 2000-01-03, every 97th temperature a gross error), i.e. 13 six-hour
windows, of which the one ending at 00 UTC spans two files. Helpers here are shared with
tests/flows/test_faults.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from obscast.components.store.obstable import ObsTable
from obscast.components.store.storage import Store

START, END = "1999-12-31T18:00", "2000-01-04T00:00"  # (START, END]: the 13 windows of the data
N_WINDOWS = 13
_SHARED: dict[str, object] = {}


def make_raw(directory: Path) -> Path:
    """Write the three daily SYNOP files into ``directory``; returns it."""
    from obscast.components.obs.bufr_writer import write_bufr

    rng = np.random.default_rng(0)
    n = 150
    lat, lon = rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)
    frames = []
    for t in pd.date_range("2000-01-01T00:00", "2000-01-03T21:00", freq="3h"):
        frames.append(pd.DataFrame({
            "time": t, "latitude": lat, "longitude": lon, "station_id": [str(10000 + i) for i in range(n)],
            "surface_altitude": rng.uniform(0, 1500, n), "air_temperature": rng.uniform(250, 300, n).astype(np.float32),
            "dew_point_temperature": np.float32(np.nan), "air_pressure_at_mean_sea_level": np.float32(np.nan),
            "surface_air_pressure": rng.uniform(85000, 102000, n).astype(np.float32),
            "wind_speed": rng.uniform(0, 20, n).astype(np.float32), "wind_from_direction": rng.uniform(0, 360, n).astype(np.float32),
            "eastward_wind": np.float32(np.nan), "northward_wind": np.float32(np.nan),
        }))
    table = pd.concat(frames, ignore_index=True)
    table.loc[::97, "air_temperature"] = 400.0  # above the 350 K limit: quarantined as out_of_range
    directory.mkdir(parents=True, exist_ok=True)
    for day, part in table.groupby(table["time"].dt.floor("D")):
        write_bufr(part, "synop", directory / f"{day:%Y%m%d}.bufr")
    return directory


def write_config(path: Path, raw: Path, row_chunk: int = 64) -> Path:
    path.write_text(f"store: {path.parent / 'unused-store'}\n"
                    f"sources:\n  synop: {{kind: synop, paths: ['{raw}/*.bufr']}}\n"
                    f"ingest: {{window: 6h, row_chunk: {row_chunk}}}\n")
    return path


def shared_data(tmp_path_factory) -> tuple[Path, Path]:
    """(raw directory, config) made once per session."""
    if "config" not in _SHARED:
        root = tmp_path_factory.mktemp("backfill-data")
        raw = make_raw(root / "raw")
        _SHARED["raw"], _SHARED["config"] = raw, write_config(root / "backfill.yaml", raw)
    return _SHARED["raw"], _SHARED["config"]


def clean_run(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted backfill of the whole range (1 worker), made once per session."""
    if "clean" not in _SHARED:
        from obscast.flows.backfill import backfill_flow

        _, config = shared_data(tmp_path_factory)
        store = tmp_path_factory.mktemp("backfill-clean") / "store"
        result = backfill_flow(source="synop", start=START, end=END, config_path=str(config), store=str(store))
        _SHARED["clean"] = (store, result)
    return _SHARED["clean"]


def table_state(store: Store, path: str) -> dict:
    """A table's window index and every column's committed values, as stored."""
    table = ObsTable(store, path)
    index = table.index()
    committed = sum(w["rows"] for w in index.values())
    group = zarr.open_group(store.zarr_store(path), mode="r", zarr_format=3)
    arrays = {name: group[name][:committed] for name in sorted(group.array_keys())}
    lengths = {name: group[name].shape[0] for name in arrays}
    return {"index": index, "arrays": arrays, "lengths": lengths}


def assert_same_store(a: Store, b: Store, same_layout: bool = True) -> None:
    """Both stores hold the same obs and quarantine tables: the same windows (rows, digests,
    time ranges) and, with ``same_layout``, byte-equal column values at the same rows and no
    rows beyond the index; else the same rows read back window by window."""
    for path in ("obs/synop.zarr", "quarantine/synop.zarr"):
        sa, sb = table_state(a, path), table_state(b, path)
        strip = (lambda idx: idx) if same_layout else (lambda idx: {k: {f: v for f, v in w.items() if f != "row_start"} for k, w in idx.items()})
        assert strip(sa["index"]) == strip(sb["index"]), path
        if same_layout:
            assert sa["lengths"] == sb["lengths"] == {n: sum(w["rows"] for w in sa["index"].values()) for n in sa["arrays"]}, path
            for name, values in sa["arrays"].items():
                other = sb["arrays"][name]
                assert values.dtype == other.dtype, (path, name)
                if values.dtype.kind in "fc":
                    assert values.tobytes() == other.tobytes(), (path, name)  # NaN payloads included
                else:
                    assert np.array_equal(values, other), (path, name)
        else:
            pd.testing.assert_frame_equal(ObsTable(a, path).read(), ObsTable(b, path).read())


def backfill_cmd(config: Path, store: str, start: str = START, end: str = END, *extra: str) -> list[str]:
    return [str(Path(sys.executable).with_name("obscast")), "backfill", "--config", str(config), "--store", store,
            "--source", "synop", "--start", start, "--end", end, *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shared_data(tmp_path_factory)


@pytest.fixture(scope="module")
def clean(prefect_api, tmp_path_factory):
    return clean_run(tmp_path_factory)


def test_backfill_equals_ingest_and_rerun_skips_complete_windows(clean, data, prefect_api, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from obscast.flows.backfill import backfill_flow
    from obscast.flows.ingest import ingest_flow

    store, result = clean
    _, config = data
    assert list(result["windows"]) == [f"{t:%Y-%m-%dT%H:%M:%S}" for t in pd.date_range("2000-01-01T00:00", "2000-01-04T00:00", freq="6h")]
    assert result["counts"] == {"written": N_WINDOWS, "unchanged": 0, "skipped": 0, "empty": 0, "failed": 0, "not run": 0}
    assert result["scanned"] == result["files"] == 3
    first = result["windows"]["2000-01-01T00:00:00"]
    assert first["files"] == 1 and first["rows"] == 150  # 00 UTC only
    assert result["windows"]["2000-01-01T06:00:00"]["files"] == 1  # 03 and 06 UTC of the first day
    assert result["windows"]["2000-01-02T00:00:00"]["files"] == 2  # 21 UTC of day 1 and 00 UTC of day 2
    assert sum(w["rows"] for w in result["windows"].values()) == 3600
    assert sum(w["rejected"] for w in result["windows"].values()) == len(range(0, 3600, 97))

    # The same store as the ingest flow over all files: same windows at the same rows.
    ingested = tmp_path / "ingested"
    ingest_flow(config_path=str(config), store=str(ingested))
    assert_same_store(Store(str(store)), Store(str(ingested)))

    # A rerun reads nothing: every window is complete, the catalogue is reused, no file changes.
    before = sorted((p, p.stat().st_mtime_ns) for p in store.rglob("*") if p.is_file() and not p.name.endswith(".lock"))
    state = backfill_flow(source="synop", start=START, end=END, config_path=str(config), store=str(store), return_state=True)
    again = state.result()
    assert again["counts"]["skipped"] == N_WINDOWS and again["scanned"] == 0
    assert sorted((p, p.stat().st_mtime_ns) for p in store.rglob("*") if p.is_file() and not p.name.endswith(".lock")) == before
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    text = {a.key: a.data for a in artifacts}["backfill-synop"]
    assert "| 2000-01-02T00:00:00 | skipped | 2 |" in text


def test_partial_backfill_then_whole_range_equals_clean_run(clean, data, prefect_api, tmp_path):
    from obscast.flows.backfill import backfill_flow

    _, config = data
    store = tmp_path / "store"
    first = backfill_flow(source="synop", start=START, end="2000-01-02T00:00", config_path=str(config), store=str(store))
    assert first["counts"]["written"] == 5 and len(first["windows"]) == 5
    rest = backfill_flow(source="synop", start=START, end=END, config_path=str(config), store=str(store))
    assert rest["counts"]["skipped"] == 5 and rest["counts"]["written"] == N_WINDOWS - 5
    assert_same_store(Store(str(store)), Store(str(clean[0])))


def test_range_without_data(data, prefect_api, tmp_path):
    from obscast.flows.backfill import backfill_flow

    _, config = data
    result = backfill_flow(source="synop", start="2001-01-01T00:00", end="2001-01-02T00:00", config_path=str(config), store=str(tmp_path / "s"))
    assert result["counts"]["empty"] == 4 and len(result["windows"]) == 4
    assert all(w["files"] == 0 for w in result["windows"].values())
    assert not (tmp_path / "s" / "obs").exists()


@pytest.mark.parametrize("args, message", [
    (["--source", "sypno"], "obscast: error: --source: expected one of the sources of {config}: ['synop'], found 'sypno'"),
    (["--start", "yesterday"], "obscast: error: --start: expected a UTC time in ISO 8601, e.g. 2000-01-01T06:00, found 'yesterday'"),
    (["--end", "1999-12-31T00:00"], "obscast: error: --end: expected a time after --start 1999-12-31T18:00:00, found 1999-12-31T00:00:00"),
    (["--workers", "0"], "obscast: error: --workers: expected 1 or more worker processes, found 0"),
    (["--address", "localhost"], ("obscast: error: --address (or ingest.dask_address): expected a Dask scheduler address "
                                  "[protocol://]host:port, e.g. tcp://10.0.0.5:8786, found 'localhost'")),
    (["--workers", "2", "--address", "tcp://127.0.0.1:8786"],
     ("obscast: error: --workers: 2 local worker processes were asked for, but the windows go to the Dask scheduler "
      "tcp://127.0.0.1:8786 (--address or ingest.dask_address): give one of the two")),
])
def test_bad_arguments_give_one_line_errors(data, tmp_path, capsys, args, message):
    from obscast.flows.cli import main

    _, config = data
    argv = backfill_cmd(config, str(tmp_path / "s"))[1:]
    for flag, value in zip(args[::2], args[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == message.format(config=config)
    assert not (tmp_path / "s").exists()


def test_two_dask_workers_give_the_same_store(clean, data, prefect_api, tmp_path):
    from obscast.flows.backfill import backfill_flow

    _, config = data
    result = backfill_flow(source="synop", start=START, end=END, config_path=str(config), store=str(tmp_path / "s"), workers=2,
                           windows_per_task=2)
    assert result["workers"] == 2 and result["counts"]["written"] == N_WINDOWS
    assert_same_store(Store(str(tmp_path / "s")), Store(str(clean[0])))


def test_two_backfills_at_once_over_overlapping_ranges(clean, data, prefect_api, tmp_path):
    _, config = data
    store = str(tmp_path / "s")
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    procs = [subprocess.Popen(backfill_cmd(config, store, START, "2000-01-03T06:00", "--json"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
             subprocess.Popen(backfill_cmd(config, store, "2000-01-01T12:00", END, "--json"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    outputs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    results = [json.loads(out) for out, _ in outputs]
    both = set(results[0]["windows"]) & set(results[1]["windows"])
    assert len(both) == 7
    for key in both:  # each shared window was stored once: by one run, found complete or identical by the other
        statuses = {r["windows"][key]["status"] for r in results}
        assert "written" in statuses and statuses <= {"written", "unchanged", "skipped"}, (key, statuses)
    assert_same_store(Store(store), Store(str(clean[0])), same_layout=False)


@pytest.fixture
def dask_cluster(tmp_path):
    """A real Dask scheduler and two workers (one thread each) on loopback, as separate processes
    of this virtual environment (so the workers import obscast); yields the scheduler address."""
    dask = str(Path(sys.executable).with_name("dask"))
    info = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    logs = [open(tmp_path / f"dask-{i}.log", "w") for i in range(3)]
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
                              cwd=tmp_path, env=env, stdout=logs[0], stderr=subprocess.STDOUT)]
    try:
        deadline = time.monotonic() + 120
        while not info.exists() or not info.read_text().strip():
            assert procs[0].poll() is None and time.monotonic() < deadline, (tmp_path / "dask-0.log").read_text()
            time.sleep(0.2)
        time.sleep(0.2)
        address = json.loads(info.read_text())["address"]
        for i in (1, 2):
            procs.append(subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard",
                                           "--name", f"obscast-test-{i}"], cwd=tmp_path, env=env, stdout=logs[i], stderr=subprocess.STDOUT))
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()


def test_backfill_on_an_existing_dask_scheduler(clean, data, prefect_api, dask_cluster, tmp_path, capsys):
    from distributed import Client, get_task_stream

    from obscast.flows.cli import main

    _, config = data
    store = tmp_path / "s"
    with Client(dask_cluster, timeout=60) as client:
        workers = set(client.scheduler_info()["workers"])
        assert len(workers) == 2
        with get_task_stream(client=client) as stream:
            status = main(backfill_cmd(config, str(store))[1:] + ["--address", dask_cluster, "--json"])
        out = capsys.readouterr().out
        assert status == 0, out
        result = json.loads(out)
        assert result["engine"] == f"Dask scheduler {dask_cluster}" and result["counts"]["written"] == N_WINDOWS
        # The three files were decoded by tasks on the scheduler's workers, not in this process.
        ran = [t for t in stream.data if t.get("worker")]
        assert len(ran) >= 3, stream.data
        assert {t["worker"] for t in ran} <= workers
        assert len(client.scheduler_info()["workers"]) == 2
    assert result["scanned"] == 3
    assert_same_store(Store(str(store)), Store(str(clean[0])))


def test_dask_address_from_the_configuration(data, tmp_path):
    from obscast.components.config import load_config
    from obscast.flows.backfill import resolve_address

    _, config = data
    path = tmp_path / "with-address.yaml"
    path.write_text(config.read_text().replace("ingest: {", "ingest: {dask_address: 'tcp://10.0.0.5:8786', "))
    loaded = load_config(path)
    assert resolve_address(loaded, None) == "tcp://10.0.0.5:8786"
    assert resolve_address(loaded, "tcp://127.0.0.1:9000") == "tcp://127.0.0.1:9000"
    assert resolve_address(load_config(config), None) is None
