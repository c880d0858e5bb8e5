"""Shared fixtures: the real sample files and one obscast read of each BUFR file.

The BUFR decodes are slow (SYNOP ~16 s on 2 cores), so each sample is read by
obscast at most once per test session and shared by the reader and QC tests.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"


@pytest.fixture(scope="session")
def samples() -> Path:
    """Directory holding the real sample files (see data/samples/SOURCES.md)."""
    return SAMPLES


@pytest.fixture(scope="session")
def synop_table() -> pd.DataFrame:
    """``read_synop(perf_synop.bufr)``, read once per session."""
    from components.readers.bufr import read_synop

    return read_synop(SAMPLES / "perf_synop.bufr")


@pytest.fixture(scope="session")
def temp_table() -> pd.DataFrame:
    """``read_temp(temp.bufr)``, read once per session."""
    from components.readers.bufr import read_temp

    return read_temp(SAMPLES / "temp.bufr")


@pytest.fixture(scope="session")
def aircraft_table() -> pd.DataFrame:
    """``read_aircraft(perf_aircraft.bufr)``, read once per session."""
    from components.readers.bufr import read_aircraft

    return read_aircraft(SAMPLES / "perf_aircraft.bufr")


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> str:
    """A real Prefect server (SQLite, temporary PREFECT_HOME) for the session; flows and
    ``obscast`` subprocesses report to it through PREFECT_API_URL."""
    import os

    from infra.prefect_server import prefect_server, server_env

    home = tmp_path_factory.mktemp("prefect-home")
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED")}
    with prefect_server(home) as url:
        env = server_env(home)
        os.environ.update(PREFECT_API_URL=url, PREFECT_HOME=env["PREFECT_HOME"], PREFECT_SERVER_ANALYTICS_ENABLED="false")
        try:
            yield url
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="session")
def pipeline_run(prefect_api, tmp_path_factory):
    """One end-to-end ``pipeline`` flow on the real samples (few epochs), shared by the flow tests.

    Returns ``(store_path, result)``.
    """
    from flows.pipeline import pipeline_flow

    store = tmp_path_factory.mktemp("store") / "store"
    result = pipeline_flow(store=str(store), epochs=8)
    return store, result
