"""What the BUFR readers produce and ask for: output columns per kind, the BUFR keys behind them,
station identifiers and satellite names (used by :mod:`obscast.components.obs.readers.bufr`)."""

from __future__ import annotations

from obscast.components.obs.readers.bufr_fast import _CHANNEL_KEYS

__all__ = ["BUFR_KEYS", "COLUMNS", "SATELLITE_NAMES"]

_COORDS = ("time", "latitude", "longitude", "station_id")

_WIND = ("wind_speed", "wind_from_direction", "eastward_wind", "northward_wind")

#: Output columns of the observation table per kind, in order.
COLUMNS: dict[str, tuple[str, ...]] = {
    "synop": _COORDS + (
        "surface_altitude",
        "air_temperature",
        "dew_point_temperature",
        "air_pressure_at_mean_sea_level",
        "surface_air_pressure",
    ) + _WIND,
    "temp": _COORDS + (
        "pressure",
        "air_temperature",
        "dew_point_temperature",
        "geopotential_height",
    ) + _WIND,
    "aircraft": _COORDS + (
        "pressure",
        "height",
        "air_temperature",
    ) + _WIND,
    "satellite": _COORDS + (
        "channel",
        "brightness_temperature",
    ),
}

# Observed variables: output column -> BUFR key (ecCodes element names).
_OBSERVED: dict[str, dict[str, str]] = {
    "synop": {
        "air_temperature": "airTemperatureAt2M",
        "dew_point_temperature": "dewpointTemperatureAt2M",
        "air_pressure_at_mean_sea_level": "pressureReducedToMeanSeaLevel",
        "surface_air_pressure": "nonCoordinatePressure",
        "wind_speed": "windSpeedAt10M",
        "wind_from_direction": "windDirectionAt10M",
    },
    "temp": {
        "air_temperature": "airTemperature",
        "dew_point_temperature": "dewpointTemperature",
        "geopotential_height": "nonCoordinateGeopotential",
        "wind_speed": "windSpeed",
        "wind_from_direction": "windDirection",
    },
    "aircraft": {
        "air_temperature": "airTemperature",
        "wind_speed": "windSpeed",
        "wind_from_direction": "windDirection",
    },
    "satellite": {
        "brightness_temperature": "brightnessTemperature",
    },
}

# Station altitude: WMO template key first, ECMWF edition-3 local key second
# (the sample perf_synop.bufr only has ``heightOfStation``).
_SYNOP_ALTITUDE_KEYS = ("heightOfStationGroundAboveMeanSeaLevel", "heightOfStation")

#: Satellite names for BUFR Common Code Table C-5 (0 01 007 satelliteIdentifier)
#: values, used as ``station_id``; other codes become their decimal string.
SATELLITE_NAMES: dict[int, str] = {
    3: "metop-b",  # METOP-1
    4: "metop-a",  # METOP-2
    5: "metop-c",  # METOP-3
    206: "noaa-15",
    207: "noaa-16",
    208: "noaa-17",
    209: "noaa-18",
    223: "noaa-19",
}

_STATION_KEY = {
    "synop": "WMO_station_id",
    "temp": "WMO_station_id",
    "aircraft": "aircraftFlightNumber",
    "satellite": "satelliteIdentifier",
}
_VERTICAL_KEYS = {"synop": (), "temp": ("pressure",), "aircraft": ("pressure", "height"), "satellite": ()}

#: The pdbufr ``columns`` each reader asks for (with ``required_columns=False``).
BUFR_KEYS: dict[str, tuple[str, ...]] = {
    kind: ("data_datetime", _STATION_KEY[kind], "latitude", "longitude")
    + (_SYNOP_ALTITUDE_KEYS if kind == "synop" else ())
    + _VERTICAL_KEYS[kind]
    + (_CHANNEL_KEYS if kind == "satellite" else ())
    + tuple(_OBSERVED[kind].values())
    for kind in ("synop", "temp", "aircraft", "satellite")
}
