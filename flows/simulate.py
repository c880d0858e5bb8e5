"""Simulate flow: the OSSE's nature run and its simulated observations written as BUFR.

The nature run goes to ``gridded/nature.zarr`` (cached by its configuration's hash, see
:mod:`obscast.components.osse.nature`); the simulated observations to ``raw/osse/<kind>/<YYYYMMDD>.bufr``, one
file per kind and day, from which the ingest flow reads them like any real BUFR file. The raw
files are cached under a key of the nature run, the error model and the networks: a second run
with the same configuration does nothing.

Both tasks also carry a Prefect cache policy keyed on that configuration hash and the store
(:func:`obscast.flows.common.config_cache`): a second run with the same configuration completes
them as ``Cached`` without running them, a changed configuration runs them again, and when their
products are missing from the store (a new or emptied store) they run with ``refresh_cache``.
The nature run reports its progress as the progress artifact ``nature-run-progress``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from obscast.components.errors import ObscastError
from obscast.components.osse.amv import AMV_KIND, has_amv_source, write_amv_bufr
from obscast.components.osse.networks import load_networks
from obscast.components.store.storage import Store
from obscast.flows.common import Progress, config_cache, load, store_of, task

RAW = "raw/osse"


def osse_key(config) -> str:
    """Cache key of the simulated observations: nature-run hash, error model and network files."""
    from obscast.components.osse.nature import config_hash

    h = hashlib.sha256()
    h.update(config_hash(config.osse.nature).encode())
    h.update(json.dumps(config.osse.error_model.model_dump(mode="json"), sort_keys=True).encode())
    for name, frame in sorted(load_networks(config.osse.networks, amv=has_amv_source(config.sources)).items()):
        h.update(name.encode())
        h.update(pd.util.hash_pandas_object(frame, index=False).values.tobytes())
    return h.hexdigest()[:16]


def nature_key(config) -> str:
    """Cache key of the nature run: the hash of ``osse.nature`` (:func:`obscast.components.osse.nature.config_hash`)."""
    from obscast.components.osse.nature import config_hash

    return config_hash(config.osse.nature)


def nature_stored(store: Store, config) -> bool:
    """Whether the store holds the complete nature run of this configuration (``gridded/nature.zarr``
    with the configuration's ``config_hash`` and ``complete`` attributes)."""
    import zarr

    try:
        attrs = dict(zarr.open_group(store.zarr_store("gridded/nature.zarr"), mode="r").attrs)
    except Exception:  # noqa: BLE001 - absent or unreadable: not stored
        return False
    return attrs.get("config_hash") == nature_key(config) and attrs.get("complete") is True


def observations_stored(store: Store, config) -> bool:
    """Whether the store holds the simulated observations of this configuration (their manifest
    with the key :func:`osse_key` and every file it lists)."""
    path = f"{RAW}/manifest.json"
    if not store.exists(path):
        return False
    manifest = store.read_json(path)
    return manifest.get("key") == osse_key(config) and all(store.exists(f) for files in manifest["files"].values() for f in files)


def _local(store: Store) -> Store:
    if not store.is_local:
        raise ObscastError(f"{store.root}: the simulation writes the nature run and raw BUFR to a local store (use a local path)")
    return store


@task(name="nature-run", cache_policy=config_cache("nature-run", nature_key))
def nature_task(config) -> str:
    """Run (or reuse) the nature run; returns its URL. Progress: the artifact ``nature-run-progress``
    (spin-up days then stored days, as one bar)."""
    from obscast.components.osse.nature import run_nature

    logger = get_run_logger()
    st = _local(store_of(config))
    path = st._path("gridded/nature.zarr")
    last = {"day": -1}
    nature = config.osse.nature
    spinup = float(nature.spinup_days)
    bar = Progress("nature-run-progress", f"Nature run {nature_key(config)}: {spinup:g} days of spin-up, {float(nature.length_days):g} days stored")

    def progress(phase: str, done: float, total: float) -> None:
        if int(done) // 10 != last["day"] // 10 or done >= total:
            logger.info("nature run %s: day %.0f of %.0f", phase, done, total)
        last["day"] = int(done)
        if phase == "spinup":
            bar.update(done, spinup + float(nature.length_days))
        else:
            bar.update(spinup + done, spinup + total)

    run_nature(nature, path, progress=progress)
    bar.update(1, 1)
    return st.url("gridded/nature.zarr")


@task(name="simulate-observations", cache_policy=config_cache("simulate-observations", osse_key))
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
    nature_path = st._path("gridded/nature.zarr")
    times = pd.to_datetime(xr.open_zarr(nature_path, consolidated=False, chunks=None)["time"].values)
    days = pd.date_range(times[0].floor("D"), times[-1], freq="D")
    for kind in load_networks(config.osse.networks, amv=has_amv_source(config.sources)):
        st.fs.makedirs(st._path(f"{RAW}/{kind}"), exist_ok=True)
    files: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    missing: dict[str, int] = {}
    # Days are independent (one random generator per kind and nature time): two processes write
    # them, the results are collected in day order, so the files do not depend on the workers.
    # A few days are written here: starting a worker (imports, networks) costs seconds.
    workers = min(SIMULATE_WORKERS, len(days)) if len(days) >= MIN_DAYS_FOR_WORKERS else 1
    args = (nature_path, config.osse.networks, has_amv_source(config.sources), config.osse.error_model, st._path(RAW))
    work = [(day, min(day + pd.Timedelta(hours=18), times[-1])) for day in days]
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: the parent holds JAX and torch thread pools, which a fork would not carry safely
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_day_worker_init, initargs=args) as pool:
            results = pool.map(_simulate_day, work)
            _collect(results, days, files, counts, missing, logger)
    else:
        _day_worker_init(*args)
        _collect(map(_simulate_day, work), days, files, counts, missing, logger)
    manifest = {"key": key, "files": files, "rows": counts, "missing_reports": missing}
    st.write_json(manifest, manifest_path)  # written last: the cache is complete
    return {**manifest, "status": "written"}


#: Processes that simulate and write the days of observations.
SIMULATE_WORKERS = 2
#: Fewer days than this are simulated in this process.
MIN_DAYS_FOR_WORKERS = 8
_DAY: dict[str, Any] = {}


def _day_worker_init(nature_path: str, networks_dir: str, amv: bool, error_model, raw_dir: str) -> None:
    """Open the nature run and load the networks once per worker process."""
    import xarray as xr

    _DAY.update(nature=xr.open_zarr(nature_path, consolidated=False, chunks=None),
                networks=load_networks(networks_dir, amv=amv), error_model=error_model, raw_dir=raw_dir)


def _simulate_day(work: tuple) -> list[tuple[str, str, int, int]]:
    """Simulate one day's observations and write one BUFR file per kind; returns
    ``(kind, path relative to the store, rows, missing reports)`` per file written."""
    from obscast.components.obs.bufr_writer import write_bufr
    from obscast.components.osse.simulate import simulate_observations

    day, end = work
    networks = _DAY["networks"]
    sim = simulate_observations(_DAY["nature"], networks, _DAY["error_model"], start=day, end=end, kinds=tuple(networks))
    out = []
    for kind, table in sim.items():
        if table.empty:
            continue
        rel = f"{RAW}/{kind}/{day:%Y%m%d}.bufr"
        path = f"{_DAY['raw_dir']}/{kind}/{day:%Y%m%d}.bufr"
        write_amv_bufr(table, path) if kind == AMV_KIND else write_bufr(table, kind, path)
        out.append((kind, rel, len(table), int(sim.missing.get(kind, 0))))
    return out


def _collect(results, days, files: dict, counts: dict, missing: dict, logger) -> None:
    """Fold the per-day results (in day order) into the manifest's files, rows and missing reports."""
    for i, (day, written) in enumerate(zip(days, results)):
        for kind, rel, rows, miss in written:
            files.setdefault(kind, []).append(rel)
            counts[kind] = counts.get(kind, 0) + rows
            missing[kind] = missing.get(kind, 0) + miss
        if i % 10 == 0 or i == len(days) - 1:
            logger.info("simulated day %d of %d (%s): rows so far %s", i + 1, len(days), f"{day:%Y-%m-%d}", counts)


@flow(name="simulate", log_prints=True)
def simulate_flow(config_path: str | None = None, store: str | None = None) -> dict[str, Any]:
    """Run the OSSE's nature run and write its simulated observations as BUFR.

    Returns
    -------
    dict
        ``nature`` URL, ``rows`` per kind, ``files`` per kind and ``status`` of the observations
        (``"written"``, or ``"unchanged"`` when reused or cached).

    Raises
    ------
    ObscastError
        If the configuration has no ``osse`` section or the store is not local.
    """
    config = load(config_path, store)
    if config.osse is None:
        raise ObscastError(f"{config_path or 'configs/default.yaml'}: no 'osse' section: nothing to simulate")
    st = _local(store_of(config))
    # Products missing from the store: run (and re-cache) even if Prefect has a cached result.
    nature_run = nature_task if nature_stored(st, config) else nature_task.with_options(refresh_cache=True)
    nature = nature_run(config)
    observe = observations_task if observations_stored(st, config) else observations_task.with_options(refresh_cache=True)
    state = observe(config, return_state=True)
    obs = state.result()
    if state.name == "Cached":
        obs = {**obs, "status": "unchanged"}
    return {"nature": nature, **obs}
