"""Shared fixtures: the real sample files and one obscast read of each BUFR file.

The BUFR decodes are slow (SYNOP ~16 s on 2 cores), so each sample is read by
obscast at most once per test session and shared by the reader and QC tests.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
SAMPLES_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "samples.yaml"
#: Training epochs of the shared samples pipeline run (the loss falls in each of them).
PIPELINE_EPOCHS = 3


#: Session fixtures too expensive to build twice: under pytest-xdist every module that uses one runs
#: on the same worker (the first one named, in this order, when a module uses several).
SHARED_FIXTURES = ("pipeline_run", "synop_table", "temp_table", "aircraft_table")
_GROUPS: dict[str, str] = {}


def work_unit(rootpath: Path, nodeid: str) -> str:
    """The xdist work unit of a test: its module, or the first of :data:`SHARED_FIXTURES` that the
    module's source names (every module naming it then runs on one worker, which builds it once)."""
    module = nodeid.split("::")[0]
    if module not in _GROUPS:
        path = rootpath / module
        text = path.read_text() if path.is_file() else ""
        _GROUPS[module] = next((name for name in SHARED_FIXTURES if name in text), module)
    return _GROUPS[module]


def pytest_xdist_make_scheduler(config, log):
    """With pytest-xdist (``-n 2``, the default addopts): whole work units (:func:`work_unit`) go to
    one worker, so module- and shared session-scoped fixtures are built once, the units with the
    most tests first (xdist's ``LoadScopeScheduling`` with another split). xdist's own
    ``loadgroup`` cannot do this under pytest 9, whose node ids ignore the ``@group`` suffix that
    xdist 3.8 writes."""
    from xdist.scheduler import LoadScopeScheduling

    class ModuleGroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(config.rootpath, nodeid)

    return ModuleGroupScheduling(config, log)


def pytest_configure(config):
    """One torch thread per xdist worker: two workers share the 2 cores (subprocesses keep theirs)."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def samples() -> Path:
    """Directory holding the real sample files (see data/samples/SOURCES.md)."""
    return SAMPLES


@pytest.fixture(scope="session")
def synop_table() -> pd.DataFrame:
    """``read_synop(perf_synop.bufr)``, read once per session."""
    from obscast.components.obs.readers.bufr import read_synop

    return read_synop(SAMPLES / "perf_synop.bufr")


@pytest.fixture(scope="session")
def temp_table() -> pd.DataFrame:
    """``read_temp(temp.bufr)``, read once per session."""
    from obscast.components.obs.readers.bufr import read_temp

    return read_temp(SAMPLES / "temp.bufr")


@pytest.fixture(scope="session")
def aircraft_table() -> pd.DataFrame:
    """``read_aircraft(perf_aircraft.bufr)``, read once per session."""
    from obscast.components.obs.readers.bufr import read_aircraft

    return read_aircraft(SAMPLES / "perf_aircraft.bufr")


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory) -> str:
    """A real Prefect server (SQLite, temporary PREFECT_HOME) for the session; flows and
    ``obscast`` subprocesses report to it through PREFECT_API_URL."""
    from obscast.infra.prefect_server import prefect_server, server_env, temporary_env

    home = tmp_path_factory.mktemp("prefect-home")
    with prefect_server(home) as url:
        with temporary_env(PREFECT_API_URL=url, PREFECT_HOME=server_env(home)["PREFECT_HOME"], PREFECT_SERVER_ANALYTICS_ENABLED="false"):
            yield url
            # Send the queued logs and events while the server is still up (else the client
            # retries against a stopped server for over a minute at exit).
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=30)
            EventsWorker.drain_all(timeout=30)


@pytest.fixture(scope="session")
def pipeline_run(prefect_api, tmp_path_factory):
    """One end-to-end ``pipeline`` flow on the real samples (:data:`PIPELINE_EPOCHS` epochs), shared by the flow tests.

    Returns ``(store_path, result)``.
    """
    from obscast.flows.pipeline import pipeline_flow

    store = tmp_path_factory.mktemp("store") / "store"
    result = pipeline_flow(config_path=str(SAMPLES_CONFIG), store=str(store), epochs=PIPELINE_EPOCHS)
    return store, result


@pytest.fixture
def one_torch_thread():
    """Run a test on one torch thread (small tensors: threads only add overhead on 2 shared cores)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
