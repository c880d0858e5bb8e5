"""Model assembly: the constructor arguments of :class:`ObsCastModel` from an experiment's statistics."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from obscast.components.data.statistics import STATIC_SOURCE, source_key, static_source_spec
from obscast.components.model.forecasting import split_channels
from obscast.encoders.setconv import G0

#: Observed variable -> (output variable, factor from the output's units to the observation's):
#: the background quantity an observation is compared with. Geopotential height (m) is
#: geopotential (m2 s-2) divided by standard gravity (WMO 1988, Technical Regulations).
OBSERVED_AS = {
    "air_temperature": ("air_temperature", 1.0),
    "eastward_wind": ("eastward_wind", 1.0),
    "northward_wind": ("northward_wind", 1.0),
    "surface_air_pressure": ("surface_air_pressure", 1.0),
    "geopotential_height": ("geopotential", 1.0 / G0),
}
#: Reference surface pressure (Pa) that turns a sigma level into a pressure to compare with an
#: observation's (the Held-Suarez surface pressure).
REFERENCE_SURFACE_PRESSURE = 100000.0


def innovation_map(statistics: Mapping[str, Any], source: str) -> list[list[float]]:
    """Which background channel each observed channel of a source is compared with.

    Each value channel of the source (``variable * n_layers + layer``) whose variable is in
    :data:`OBSERVED_AS` is paired with the output channel of that quantity nearest in
    log-pressure: the layer centre for profile sources; the surface for single-level sources
    (a single-level output channel such as ``surface_air_pressure`` if one exists, else the
    lowest level). Sigma levels count as ``sigma * REFERENCE_SURFACE_PRESSURE``. The scale takes
    a normalised background anomaly to the source's normalisation:
    ``std_output * factor / std_observation(layer)`` (both anomalies from a training
    climatology, :func:`obscast.components.data.statistics.fit_statistics`). Channels with no
    such output (satellite radiances: no radiative transfer in the background) get no
    innovation.

    Parameters
    ----------
    statistics : dict
        From :func:`obscast.components.data.statistics.fit_statistics`.
    source : str
        A source of ``statistics["sources"]``.

    Returns
    -------
    list of [int, int, float]
        ``[channel, output channel, scale]`` entries, the ``innovations`` of
        :class:`obscast.encoders.setconv.SetConvEncoder`.

    Raises
    ------
    KeyError
        If ``source`` is not in the statistics.
    """
    st = statistics["sources"][source]
    grid = statistics["grid"]
    outputs = split_channels(list(grid["channels"]))
    levels = st["pressure_levels"] or [None]
    out: list[list[float]] = []
    for v, variable in enumerate(st["variables"]):
        if variable not in OBSERVED_AS:
            continue
        target, factor = OBSERVED_AS[variable]
        candidates = [(i, lev) for i, (var, lev) in enumerate(outputs) if var == target]
        for k, p in enumerate(levels):
            if p is None and any(lev is None for _, lev in candidates):
                pick = next(i for i, lev in candidates if lev is None)
            else:
                levelled = [(i, lev * REFERENCE_SURFACE_PRESSURE if lev <= 1.5 else lev) for i, lev in candidates if lev is not None]
                if not levelled:
                    continue
                want = math.log(p if p is not None else REFERENCE_SURFACE_PRESSURE)
                pick = min(levelled, key=lambda c: abs(math.log(c[1]) - want))[0]
            scale = float(grid["std"][pick]) * factor / float(st["std"][k][v])
            out.append([v * len(levels) + k, pick, scale])
    return out


def build_model_args(
    statistics: Mapping[str, Any],
    station_channels: Sequence[str],
    *,
    history: int = 1,
    n_lat: int = 32,
    n_lon: int = 64,
    latent_channels: int = 64,
    processor_hidden: int = 96,
    n_blocks: int = 3,
    decoder_hidden: int = 64,
    encoder_hidden: int = 64,
    lengthscale_km: float | None = None,
    station_lengthscale_km: float | None = None,
    station_residual: bool | str = True,
    cycling: bool = False,
    analysis_blocks: int = 0,
    innovations: bool = False,
) -> dict[str, Any]:
    """Constructor arguments of :class:`ObsCastModel` for an experiment (JSON-ready).

    Parameters
    ----------
    statistics : dict
        From :func:`obscast.components.data.statistics.fit_statistics`; sets the sources, their variables
        and pressure layers, the output channels and grid.
    station_channels : sequence of str
        Variables of the station decoder (``ObsWindowDataset.station_channels``).
    history : int
        Observation windows per source (one SetConv encoder each).
    n_lat, n_lon, latent_channels, processor_hidden, n_blocks, decoder_hidden : int
        Latent grid and network sizes (see :class:`ObsCastModel`).
    encoder_hidden : int
        Hidden width of the SetConv MLPs.
    lengthscale_km, station_lengthscale_km : float, optional
        Initial kernel lengthscales (defaults of the encoders/decoder).
    station_residual : bool or {"forecast"}
        True: add the climatology at the stations to the station decoder's output (the decoder
        then learns anomalies, as the gridded one does); ``"forecast"``: add the gridded
        forecast interpolated to the stations (the decoder learns a correction to it).
    cycling : bool
        Cycled analysis: the previous cycle's one-step forecast (gridded normalised anomaly)
        is the background of the next analysis (see :class:`ObsCastModel`, :func:`cycle_analyses`).
    analysis_blocks : int
        Residual blocks turning the fused state into the analysis (see :class:`ObsCastModel`).
    innovations : bool
        With ``cycling``: the SetConv encoders also take the innovations of their observations
        against the background (:func:`innovation_map`).

    Returns
    -------
    dict
        Keyword arguments of :class:`ObsCastModel`.
    """
    sources: dict[str, dict[str, Any]] = {STATIC_SOURCE: static_source_spec(statistics)}
    for name, st in statistics["sources"].items():
        for h in range(history):
            spec: dict[str, Any] = {"type": "setconv", "variables": list(st["variables"]), "hidden": encoder_hidden}
            if lengthscale_km is not None:
                spec["lengthscale_km"] = float(lengthscale_km)
            if st["pressure_levels"]:
                spec["pressure_levels"] = list(st["pressure_levels"])
            if innovations and (pairs := innovation_map(statistics, name)):
                spec["innovations"] = pairs
            sources[source_key(name, h)] = spec
    g = statistics["grid"]
    return {
        "sources": sources,
        "output_variables": list(g["channels"]),
        "out_lat": list(g["latitude"]),
        "out_lon": list(g["longitude"]),
        "n_lat": n_lat,
        "n_lon": n_lon,
        "latent_channels": latent_channels,
        "processor_hidden": processor_hidden,
        "n_blocks": n_blocks,
        "decoder_hidden": decoder_hidden,
        "station_variables": list(station_channels),
        "station_lengthscale_km": station_lengthscale_km,
        "residual_source": STATIC_SOURCE,
        **({"station_residual": station_residual} if station_residual else {}),
        **({"cycling": True} if cycling else {}),
        **({"analysis_blocks": int(analysis_blocks)} if analysis_blocks else {}),
    }
