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
