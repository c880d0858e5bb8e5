"""Readers turning observation (BUFR) and gridded (GRIB) files into tables/datasets.

See :mod:`obscast.components.obs.readers.bufr` for the observation-table layout and
:mod:`obscast.components.obs.readers.grib` for the gridded dataset layout.
"""

from __future__ import annotations

from obscast.components.obs.readers.bufr import (
    COLUMNS,
    READERS,
    read_aircraft,
    read_observations,
    read_satellite,
    read_synop,
    read_temp,
)
from obscast.components.obs.readers.grib import GRIB_PARAMETERS, read_grib

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
