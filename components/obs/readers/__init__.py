"""Readers turning observation (BUFR, netCDF) and gridded (GRIB, netCDF) files into tables/datasets.

See :mod:`obscast.components.obs.readers.bufr` for the observation-table layout,
:mod:`obscast.components.obs.readers.amv` for satellite winds (kind ``"amv"``),
:mod:`obscast.components.obs.readers.netcdf` for netCDF files and
:mod:`obscast.components.obs.readers.grib` for the gridded dataset layout.

Importing this package registers the AMV reader in
:data:`obscast.components.obs.readers.bufr.READERS` and its columns in
:data:`obscast.components.obs.readers.bufr.COLUMNS` (every import of a reader module runs this
file first), so :func:`read_observations` dispatches ``kind="amv"`` like the BUFR kinds.
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
from obscast.components.obs.readers.amv import AMV_COLUMNS, read_amv
from obscast.components.obs.readers.grib import GRIB_PARAMETERS, read_grib

READERS.setdefault("amv", read_amv)
COLUMNS.setdefault("amv", AMV_COLUMNS)

__all__ = [
    "AMV_COLUMNS",
    "COLUMNS",
    "GRIB_PARAMETERS",
    "READERS",
    "read_aircraft",
    "read_amv",
    "read_grib",
    "read_observations",
    "read_satellite",
    "read_synop",
    "read_temp",
]
