"""Readers turning observation (BUFR) and gridded (GRIB) files into tables/datasets.

See :mod:`components.readers.bufr` for the observation-table layout and
:mod:`components.readers.grib` for the gridded dataset layout.
"""

from __future__ import annotations

from components.readers.bufr import (
    COLUMNS,
    READERS,
    read_aircraft,
    read_observations,
    read_satellite,
    read_synop,
    read_temp,
)
from components.readers.grib import GRIB_PARAMETERS, read_grib

__all__ = [
    "COLUMNS",
    "GRIB_PARAMETERS",
    "READERS",
    "read_aircraft",
    "read_grib",
    "read_observations",
    "read_satellite",
    "read_synop",
    "read_temp",
]
