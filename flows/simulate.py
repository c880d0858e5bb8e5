"""Simulate flow: the OSSE's nature run and its simulated observations written as BUFR.

The nature run goes to ``gridded/nature.zarr`` (cached by its configuration's hash, see
:mod:`obscast.components.osse.nature`); the simulated observations to ``raw/osse/<kind>/<YYYYMMDD>.bufr``, one
file per kind and day, from which the ingest flow reads them like any real BUFR file. The raw
files are cached under a key of the nature run, the error model and the networks: a second run
with the same configuration does nothing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from obscast.components.errors import ObscastError
from obscast.components.osse.networks import load_networks
from obscast.components.store.storage import Store
from obscast.flows.common import load, store_of, task

RAW = "raw/osse"


def osse_key(config) -> str:
    """Cache key of the simulated observations: nature-run hash, error model and network files."""
    from obscast.components.osse.nature import config_hash

    h = hashlib.sha256()
    h.update(config_hash(config.osse.nature).encode())
    h.update(json.dumps(config.osse.error_model.model_dump(mode="json"), sort_keys=True).encode())
    for name, frame in sorted(load_networks(config.osse.networks).items()):
        h.update(name.encode())
        h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return h.hexdigest()[:16]


def _local(store: Store) -> Store:
    if not store.is_local:
        raise ObscastError(f"{store.root}: the simulation writes the nature run and raw BUFR to a local store (use a local path)")
    return store


@task(name="nature-run")
def nature_task(config) -> str:
    """Run (or reuse) the nature run; returns its URL."""
    from obscast.components.osse.nature import run_nature

    logger = get_run_logger()
    st = _local(store_of(config))
    path = st._path("gridded/nature.zarr")
    last = {"day": -1}

    def progress(phase: str, done: float, total: float) -> None:
        if int(done) // 10 != last["day"] // 10 or done >= total:
            logger.info("nature run %s: day %.0f of %.0f", phase, done, total)
        last["day"] = int(done)

    run_nature(config.osse.nature, path, progress=progress)
    return st.url("gridded/nature.zarr")


@task(name="simulate-observations")
def observations_task(config) -> dict[str, Any]:
    """Simulate and write the observations day by day; skipped when the cache key matches."""
    import xarray as xr

    from obscast.components.obs.bufr_writer import write_bufr
    from obscast.components.osse.simulate import simulate_observations

    logger = get_run_logger()
    st = _local(store_of(config))
    key = osse_key(config)
    manifest_path = f"{RAW}/manifest.json"
    if st.exists(manifest_path):
        manifest = st.read_json(manifest_path)
        if manifest.get("key") == key and all(st.exists(f) for files in manifest["files"].values() for f in files):
            logger.info("simulated observations for key %s exist already: reused", key)
            return {**manifest, "status": "unchanged"}
    st.rm(RAW)  # a different configuration: its raw files are regenerated (observations stay in obs/)
    nature = xr.open_zarr(st.zarr_store("gridded/nature.zarr"), consolidated=False, chunks=None)
    networks = load_networks(config.osse.networks)
    times = pd.to_datetime(nature["time"].values)
    days = pd.date_range(times[0].floor("D"), times[-1], freq="D")
    files: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    missing: dict[str, int] = {}
    for i, day in enumerate(days):
        end = min(day + pd.Timedelta(hours=18), times[-1])
        sim = simulate_observations(nature, networks, config.osse.error_model, start=day, end=end)
        for kind, table in sim.items():
            if table.empty:
                continue
            rel = f"{RAW}/{kind}/{day:%Y%m%d}.bufr"
            st.fs.makedirs(st._path(f"{RAW}/{kind}"), exist_ok=True)
            write_bufr(table, kind, st._path(rel))
            files.setdefault(kind, []).append(rel)
            counts[kind] = counts.get(kind, 0) + len(table)
            missing[kind] = missing.get(kind, 0) + sim.missing.get(kind, 0)
        if i % 10 == 0 or i == len(days) - 1:
            logger.info("simulated day %d of %d (%s): rows so far %s", i + 1, len(days), f"{day:%Y-%m-%d}", counts)
    manifest = {"key": key, "files": files, "rows": counts, "missing_reports": missing}
    st.write_json(manifest, manifest_path)  # written last: the cache is complete
    return {**manifest, "status": "written"}


@flow(name="simulate", log_prints=True)
def simulate_flow(config_path: str | None = None, store: str | None = None) -> dict[str, Any]:
    """Run the OSSE's nature run and write its simulated observations as BUFR.

    Returns
    -------
    dict
        ``nature`` URL, ``rows`` per kind, ``files`` per kind and ``status`` of the observations.

    Raises
    ------
    ObscastError
        If the configuration has no ``osse`` section or the store is not local.
    """
    config = load(config_path, store)
    if config.osse is None:
        raise ObscastError(f"{config_path or 'configs/default.yaml'}: no 'osse' section: nothing to simulate")
    nature = nature_task(config)
    obs = observations_task(config)
    return {"nature": nature, **obs}
