"""Prefect features the flows use, checked on a real Prefect server: progress and table artifacts,
the final state's message, no retries of write tasks on input errors, and the simulate stage's
cache keyed on the configuration hash.

The backfill and ingest runs use the small SYNOP files of tests/flows/test_backfill.py (three
daily files, 3600 reports, every 97th temperature a gross error: 38 quarantined rows).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.flows.test_backfill import END, N_WINDOWS, START, shared_data

NETWORKS = Path(__file__).resolve().parents[2] / "data" / "networks"
QUARANTINED = len(range(0, 3600, 97))  # 38


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return shared_data(tmp_path_factory)


def _artifacts(flow_run_id) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def _task_runs(flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def test_backfill_publishes_progress_and_table_and_names_the_quarantine(data, prefect_api, tmp_path):
    from obscast.flows.backfill import backfill_flow

    _, config = data
    state = backfill_flow(source="synop", start=START, end=END, config_path=str(config), store=str(tmp_path / "s"), return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["quarantined"] == {"out_of_range:air_temperature": QUARANTINED}
    assert state.message == (f"synop: {N_WINDOWS} windows: {N_WINDOWS} written; {QUARANTINED} rows quarantined "
                             f"(out_of_range:air_temperature {QUARANTINED}); 0 undated rows in the files (in no window)")
    artifacts = _artifacts(state.state_details.flow_run_id)
    progress = artifacts["backfill-synop-progress"]
    assert progress.type == "progress" and float(progress.data) == 100.0
    table = artifacts["backfill-synop-windows"]
    assert table.type == "table"
    rows = pd.read_json(io.StringIO(table.data))
    assert list(rows["window_end"]) == list(result["windows"]) and set(rows["status"]) == {"written"}
    assert rows["rejected"].sum() == QUARANTINED and rows["rows"].sum() == 3600
    assert artifacts["backfill-synop"].type == "markdown"

    # A rerun skips every window and says so.
    again = backfill_flow(source="synop", start=START, end=END, config_path=str(config), store=str(tmp_path / "s"), return_state=True)
    assert again.message.startswith(f"synop: {N_WINDOWS} windows: {N_WINDOWS} skipped; 0 rows quarantined")


def test_ingest_publishes_qc_table_and_names_the_quarantine(data, prefect_api, tmp_path):
    from obscast.flows.ingest import ingest_flow

    _, config = data
    state = ingest_flow(config_path=str(config), store=str(tmp_path / "s"), return_state=True)
    assert state.is_completed()
    assert state.message == f"synop: {QUARANTINED} of 3600 rows quarantined (out_of_range:air_temperature {QUARANTINED})"
    table = _artifacts(state.state_details.flow_run_id)["ingest-qc"]
    assert table.type == "table"
    rows = pd.read_json(io.StringIO(table.data)).set_index("outcome")
    assert rows.loc["accepted", "rows"] == 3600 - QUARANTINED
    assert rows.loc["out_of_range:air_temperature", "rows"] == QUARANTINED
    assert rows.loc["duplicate", "rows"] == 0 and rows["rows"].sum() == 3600
    assert rows.loc["out_of_range:air_temperature", "percent"] == pytest.approx(100 * QUARANTINED / 3600, abs=1e-3)


def test_scores_are_published_as_a_table_artifact(prefect_api):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from prefect import flow

    from obscast.components.verification.metrics import to_markdown
    from obscast.flows.common import publish_scores

    index = pd.MultiIndex.from_tuples([("air_temperature [K]", "6 h"), ("air_temperature [K]", "12 h")], names=["channel", "lead_time"])
    scores = pd.DataFrame({"model": [0.52, 0.81], "persistence": [0.9, np.nan]}, index=index)
    markdown = to_markdown(scores, "tiny v0001: RMSE")
    buffer = io.BytesIO()
    plt.figure(figsize=(1, 1))
    plt.savefig(buffer, format="png")
    plt.close("all")

    @flow
    def publish():
        publish_scores(markdown, buffer.getvalue(), "/store/scores/rmse.png", "RMSE")

    state = publish(return_state=True)
    artifacts = _artifacts(state.state_details.flow_run_id)
    assert artifacts["verification-scores"].type == "markdown"
    table = artifacts["verification-scores-table"]
    assert table.type == "table"
    rows = pd.read_json(io.StringIO(table.data))
    assert list(rows.columns) == ["table", "channel", "lead_time", "model", "persistence"]
    assert rows["model"].tolist() == [0.52, 0.81] and rows.loc[0, "persistence"] == 0.9
    assert rows.loc[1, "persistence"] == "n/a" and set(rows["table"]) == {"tiny v0001: RMSE"}


def test_progress_artifact_reaches_100_percent(prefect_api):
    from prefect import flow

    from obscast.flows.common import Progress

    @flow
    def count():
        bar = Progress("count-progress", "counting", min_interval=0.0)
        for i in range(1, 5):
            bar.update(i, 4)

    state = count(return_state=True)
    artifact = _artifacts(state.state_details.flow_run_id)["count-progress"]
    assert artifact.type == "progress" and float(artifact.data) == 100.0


def test_write_tasks_do_not_retry_input_errors(data, prefect_api, tmp_path):
    """A window stored with other content (an ObscastError) fails the write task on its first run;
    an OSError (a store path under a file) is retried."""
    from prefect import flow

    from obscast.components.config import load_config
    from obscast.components.store.obstable import WindowConflictError
    from obscast.flows.backfill import commit_windows
    from obscast.flows.ingest import write_source

    _, config_path = data
    config = load_config(config_path, {"store": str(tmp_path / "s")})
    t = pd.Timestamp("2000-01-01T03:00")
    rows = pd.DataFrame({"time": [t, t], "latitude": [1.0, 2.0], "longitude": [3.0, 4.0], "station_id": ["1", "2"],
                         "air_temperature": np.array([280.0, 281.0], np.float32), "qc": np.zeros(2, np.uint8)})
    rejected = rows.iloc[:0].drop(columns="qc").assign(reason=pd.Series([], dtype=object))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    broken = load_config(config_path, {"store": str(blocker / "store")})

    @flow
    def writes():
        first = commit_windows(config, "synop", rows, rejected)
        changed = rows.assign(air_temperature=np.array([250.0, 251.0], np.float32))
        conflicts = [commit_windows(config, "synop", changed, rejected, return_state=True),
                     write_source(config, "synop", changed, rejected, return_state=True)]
        transient = write_source.with_options(retry_delay_seconds=0)(broken, "synop", rows, rejected, return_state=True)
        return first, conflicts, transient

    first, conflicts, transient = writes()
    assert first == {"2000-01-01T06:00:00": "written"}
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for state in conflicts:
            assert state.is_failed()
            with pytest.raises(WindowConflictError):
                state.result()
            assert client.read_task_run(state.state_details.task_run_id).run_count == 1
        assert transient.is_failed()
        assert client.read_task_run(transient.state_details.task_run_id).run_count == 3  # 2 retries


@pytest.mark.slow
def test_simulate_is_cached_on_the_configuration_hash(prefect_api, tmp_path, monkeypatch):
    """Same configuration: both simulate tasks complete as Cached without running; a changed error
    model: the nature run is cached, the observations are simulated again; an emptied store: both run."""
    pytest.importorskip("dinosaur")
    import shutil

    from obscast.flows.simulate import simulate_flow

    config = tmp_path / "osse.yaml"  # the tiny OSSE's T21 nature run, one day without spin-up
    config.write_text("store: store\nsources:\n  synop: {kind: synop, paths: ['store:raw/osse/synop/*.bufr']}\n"
                      f"osse:\n  nature: {{truncation: T21, spinup_days: 0, length_days: 1}}\n  networks: {NETWORKS}\n")
    store = tmp_path / "store"

    runs = []

    def run():
        state = simulate_flow(config_path=str(config), store=str(store), return_state=True)
        assert state.is_completed(), state
        runs.append(state.state_details.flow_run_id)
        names = {t.name.rsplit("-", 1)[0]: t.state.name for t in _task_runs(runs[-1])}
        return state.result(), names

    first, names = run()
    assert names == {"nature-run": "Completed", "simulate-observations": "Completed"} and first["status"] == "written"
    progress = _artifacts(runs[-1])["nature-run-progress"]
    assert progress.type == "progress" and float(progress.data) == 100.0
    files = {p: p.stat().st_mtime_ns for p in (store / "raw").rglob("*.bufr")}

    second, names = run()
    assert names == {"nature-run": "Cached", "simulate-observations": "Cached"}
    assert second["status"] == "unchanged" and second["nature"] == first["nature"]
    assert {p: p.stat().st_mtime_ns for p in (store / "raw").rglob("*.bufr")} == files

    monkeypatch.setenv("OBSCAST_OSSE__ERROR_MODEL__SEED", "12345")
    third, names = run()
    assert names == {"nature-run": "Cached", "simulate-observations": "Completed"} and third["status"] == "written"

    shutil.rmtree(store)  # the products are gone: the tasks run again although Prefect has their results
    _, names = run()
    assert names == {"nature-run": "Completed", "simulate-observations": "Completed"}
    assert (store / "gridded" / "nature.zarr").is_dir()
