"""Observing-network geometry extracted from the real sample files, for the OSSE.

The observing-system simulation experiment (:mod:`obscast.components.osse.simulate`) places its
simulated observations where real instruments report: the SYNOP stations, the
radiosonde (TEMP) sites, the aircraft tracks and the HIRS fields of view of the
sample files in ``data/samples`` (see ``data/samples/SOURCES.md``). Only the
geometry is kept (positions, altitudes, time offsets), never the measured
values. :func:`extract_networks` wrote the CSV files of ``data/networks`` once
(see ``data/networks/README.md``); :func:`load_networks` reads them.

Files and columns
-----------------
``synop_stations.csv``
    ``station_id`` (str, WMO block*1000+station), ``latitude``, ``longitude``
    [degree], ``altitude`` [m above MSL]: one row per station of the rows of
    ``perf_synop.bufr`` that pass :func:`obscast.components.obs.qc.apply_qc`, first
    position kept, sorted by ``station_id`` (numerically).
``temp_sites.csv``
    ``station_id``, ``latitude``, ``longitude``: one row per sounding station
    of ``temp.bufr`` (launch position of the message header), sorted numerically.
``aircraft_tracks.csv``
    ``flight`` (str, ``""`` where the report has no flight number),
    ``time_offset`` [s since the first report of the file, 2009-01-23 12 UTC],
    ``latitude``, ``longitude``, ``height`` [m, NaN for ACARS reports] and
    ``pressure`` [Pa, NaN where a height is given]: every report of
    ``perf_aircraft.bufr`` with a valid position and a height or pressure,
    sorted by ``flight`` then ``time_offset``.
``hirs_footprints.csv``
    ``time_offset`` [s since the first scan line, 2018-11-22 11:48:54.396 UTC,
    rounded to 1 ms], ``latitude``, ``longitude``: the HIRS/4 fields of view of
    one Metop-A orbit (``M02-HIRS-...bufr``), thinned to every 2nd scan line
    and every 4th field of view (:data:`HIRS_LINE_STRIDE`,
    :data:`HIRS_FOV_STRIDE`).

Positions are rounded to 1e-5 degree (the BUFR precision of 0 05 001/0 06 001)
and longitudes are in [-180, 180).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "DEFAULT_DIR",
    "HIRS_FOV_STRIDE",
    "HIRS_LINE_STRIDE",
    "NETWORK_FILES",
    "extract_networks",
    "load_networks",
]

#: Where the network CSV files live: ``data/networks`` of the repository, or of the installed
#: ``obscast`` package (package data, pyproject.toml).
DEFAULT_DIR: Path = Path(__file__).resolve().parents[2] / "data" / "networks"

#: Network name -> CSV file name.
NETWORK_FILES: dict[str, str] = {
    "synop": "synop_stations.csv",
    "temp": "temp_sites.csv",
    "aircraft": "aircraft_tracks.csv",
    "satellite": "hirs_footprints.csv",
}

#: Keep every n-th HIRS scan line / field of view (56 per line).
HIRS_LINE_STRIDE = 2
HIRS_FOV_STRIDE = 4

_SAMPLES = {
    "synop": "perf_synop.bufr",
    "temp": "temp.bufr",
    "aircraft": "perf_aircraft.bufr",
    "satellite": "M02-HIRS-*.bufr",
}

_DTYPES: dict[str, dict[str, object]] = {
    "synop": {"station_id": str, "latitude": float, "longitude": float, "altitude": float},
    "temp": {"station_id": str, "latitude": float, "longitude": float},
    "aircraft": {
        "flight": str, "time_offset": float, "latitude": float, "longitude": float,
        "height": float, "pressure": float,
    },
    "satellite": {"time_offset": float, "latitude": float, "longitude": float},
}

_DECIMALS = 5  # 1e-5 degree


def _sample(samples_dir: Path, kind: str) -> Path:
    matches = sorted(samples_dir.glob(_SAMPLES[kind]))
    if not matches:
        raise FileNotFoundError(f"no {_SAMPLES[kind]} in {samples_dir}")
    return matches[0]


def _numeric_order(ids: pd.Series) -> pd.Series:
    """Sort key: WMO identifiers in numeric order ("1001" before "10007")."""
    return ids.str.zfill(8)


def _synop_stations(path: Path) -> pd.DataFrame:
    from obscast.components.obs.qc import apply_qc
    from obscast.components.obs.readers.bufr import read_synop

    accepted = apply_qc(read_synop(path), "synop", source=path.name).accepted
    stations = accepted.drop_duplicates("station_id", keep="first")
    return pd.DataFrame({
        "station_id": stations["station_id"].to_numpy(dtype=object),
        "latitude": stations["latitude"].round(_DECIMALS).to_numpy(),
        "longitude": stations["longitude"].round(_DECIMALS).to_numpy(),
        "altitude": stations["surface_altitude"].to_numpy(),
    }).sort_values("station_id", key=_numeric_order, kind="stable").reset_index(drop=True)


def _temp_sites(path: Path) -> pd.DataFrame:
    from obscast.components.obs.readers.bufr import read_temp

    sites = read_temp(path).drop_duplicates("station_id", keep="first")
    return pd.DataFrame({
        "station_id": sites["station_id"].to_numpy(dtype=object),
        "latitude": sites["latitude"].round(_DECIMALS).to_numpy(),
        "longitude": sites["longitude"].round(_DECIMALS).to_numpy(),
    }).sort_values("station_id", key=_numeric_order, kind="stable").reset_index(drop=True)


def _aircraft_tracks(path: Path) -> pd.DataFrame:
    from obscast.components.obs.readers.bufr import read_aircraft

    t = read_aircraft(path)
    ok = (
        t["time"].notna() & t["latitude"].notna() & t["longitude"].notna()
        & (t["height"].notna() | t["pressure"].notna())
    )
    t = t[ok]
    offset = (t["time"] - t["time"].min()).dt.total_seconds()
    out = pd.DataFrame({
        "flight": t["station_id"].to_numpy(dtype=object),
        "time_offset": offset.to_numpy(),
        "latitude": t["latitude"].round(_DECIMALS).to_numpy(),
        "longitude": t["longitude"].round(_DECIMALS).to_numpy(),
        "height": t["height"].to_numpy(np.float64),
        "pressure": t["pressure"].to_numpy(np.float64),
    })
    return out.sort_values(["flight", "time_offset"], kind="stable").reset_index(drop=True)


def _hirs_footprints(path: Path) -> pd.DataFrame:
    from obscast.components.obs.readers.bufr import read_satellite

    t = read_satellite(path)
    fov = t[t["channel"] == t["channel"].min()].reset_index(drop=True)  # one row per field of view
    # Rows are in file order within a time (stable sort); every field of view
    # of a scan line has the line's time, so the scan line is the time's rank
    # and the field of view the position within it.
    line = fov["time"].rank(method="dense").to_numpy(dtype=np.int64) - 1
    pos = fov.groupby("time", sort=False).cumcount().to_numpy()
    keep = (line % HIRS_LINE_STRIDE == 0) & (pos % HIRS_FOV_STRIDE == 0)
    fov = fov[keep]
    offset = (fov["time"] - t["time"].min()).dt.total_seconds().round(3)
    return pd.DataFrame({
        "time_offset": offset.to_numpy(),
        "latitude": fov["latitude"].round(_DECIMALS).to_numpy(),
        "longitude": fov["longitude"].round(_DECIMALS).to_numpy(),
    }).reset_index(drop=True)


def extract_networks(samples_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Extract the network geometry of the real sample files into CSV files.

    Parameters
    ----------
    samples_dir : str or os.PathLike
        Directory with ``perf_synop.bufr``, ``temp.bufr``,
        ``perf_aircraft.bufr`` and one ``M02-HIRS-*.bufr`` (the repository's
        ``data/samples``).
    out_dir : str or os.PathLike
        Directory for the CSV files (created if needed; existing files are
        overwritten).

    Returns
    -------
    dict of str to pathlib.Path
        Network name (``synop``, ``temp``, ``aircraft``, ``satellite``) ->
        file written (see the module docstring for names and columns).

    Raises
    ------
    FileNotFoundError
        A sample file is missing.
    components.errors.InputError
        A sample file cannot be decoded.

    Notes
    -----
    Decoding the SYNOP sample with pdbufr takes ~20 s; the rest ~5 s.
    """
    samples, out = Path(samples_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    builders = {
        "synop": _synop_stations,
        "temp": _temp_sites,
        "aircraft": _aircraft_tracks,
        "satellite": _hirs_footprints,
    }
    written = {}
    for name, build in builders.items():
        table = build(_sample(samples, name))
        path = out / NETWORK_FILES[name]
        table.to_csv(path, index=False, float_format="%.10g")
        written[name] = path
    return written


def load_networks(dir: str | os.PathLike[str] = DEFAULT_DIR, *, amv: bool = False) -> dict[str, pd.DataFrame]:  # noqa: A002
    """Load the network CSV files.

    Parameters
    ----------
    dir : str or os.PathLike, optional
        Directory holding the files of :data:`NETWORK_FILES` (default
        :data:`DEFAULT_DIR`, the repository's ``data/networks``).
    amv : bool, optional
        Also load the satellite-wind targets ``amv_targets.csv`` as ``"amv"``
        (:func:`obscast.components.osse.amv.load_amv_targets`).

    Returns
    -------
    dict of str to pandas.DataFrame
        ``synop`` (n_stations, 4), ``temp`` (n_sites, 3), ``aircraft``
        (n_reports, 6), ``satellite`` (n_footprints, 3), columns as in the
        module docstring; identifiers are ``str`` (missing flight numbers
        ``""``), the rest float64.

    Raises
    ------
    FileNotFoundError
        A file is missing.
    ValueError
        A file lacks one of the expected columns.
    """
    base = Path(dir)
    out = {}
    for name, filename in NETWORK_FILES.items():
        dtypes = _DTYPES[name]
        text = [c for c, t in dtypes.items() if t is str]
        table = pd.read_csv(base / filename, dtype={c: str for c in text}, keep_default_na=False,
                            na_values={c: ["", "NaN", "nan"] for c in dtypes if c not in text})
        missing = [c for c in dtypes if c not in table.columns]
        if missing:
            raise ValueError(f"{base / filename}: missing column(s) {missing}")
        table = table[list(dtypes)]
        for c, t in dtypes.items():
            table[c] = table[c].astype(object) if t is str else table[c].astype(np.float64)
        out[name] = table
    if amv:
        from obscast.components.osse.amv import AMV_KIND, load_amv_targets

        out[AMV_KIND] = load_amv_targets(base)
    return out
