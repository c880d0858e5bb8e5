"""Network probes: the trained model scored, unchanged, with the OSSE's observing network moved.

The truth stays the nature run; only the observations move. For each probe of
:data:`obscast.components.osse.probes.PROBES` (``rotate90``, ``rotate180``, ``mirror``,
``thin50``, ``thin10``) the observations of the test split are simulated again from the nature run
at the moved network (:func:`obscast.components.osse.probes.resimulate_tables`: the simulate
stage's operators, error model and seeds, then the ingest QC, no BUFR round trip), and the model
is verified on them exactly as :func:`obscast.components.training.workflow.verify` scores a
withheld source: :func:`obscast.components.verification.evaluate.evaluate` on every ``every``-th
test init (a cycling model runs its analysis cycle through every test window, spin-up included,
on the moved observations, with a :class:`~obscast.components.training.trainer.FeatureCache` of
them). The reference column ``unmoved`` goes through the same re-simulation with the network as
loaded, so a probe's change isolates the move. The Held-Suarez climate is zonally symmetric and,
in distribution, symmetric between the hemispheres, so a model that learned the local response
to observations should keep its skill (issue 14's targets: < 5 % RMSE loss for the rotations,
< 10 % for the mirror).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from obscast.components.config import Config
from obscast.components.data.experiment import ExperimentData, dataset
from obscast.components.data.tables import prepare_table
from obscast.components.errors import ConfigError
from obscast.components.osse.amv import has_amv_source
from obscast.components.osse.networks import load_networks
from obscast.components.osse.probes import (
    PROBES,
    THIN_SEED,
    move_networks,
    resimulate_tables,
)
from obscast.components.store.storage import Store

__all__ = ["UNMOVED", "probe_scores", "probe_tables"]

#: Column of the scores with the network as loaded.
UNMOVED = "unmoved"
#: Store path of the OSSE's nature run.
NATURE_PATH = "gridded/nature.zarr"


def _check(config: Config) -> None:
    if config.osse is None:
        raise ConfigError("verify.probes: network probes need an OSSE configuration (an `osse` section): the observations are simulated again")
    if config.require_experiment().target.dataset != "nature":
        raise ConfigError(f"verify.probes: the target must be the OSSE's nature run, not {config.experiment.target.dataset!r}")


def probe_tables(config: Config, nature: xr.Dataset, networks: dict[str, pd.DataFrame], sources: Sequence[str],
                 start: pd.Timestamp, end: pd.Timestamp, probe: str | None, seed: int = THIN_SEED) -> dict[str, pd.DataFrame]:
    """The sources' tables of nature times ``[start, end]`` simulated at the network moved by ``probe``,
    prepared for the datasets (as :func:`obscast.components.data.experiment.load_tables` prepares the
    stored tables).

    Parameters
    ----------
    config : Config
        ``osse.error_model`` and ``sources`` (their kinds) are used.
    nature : xarray.Dataset
        The nature run (time, level, latitude, longitude).
    networks : dict
        The unmoved networks (:func:`obscast.components.osse.networks.load_networks`).
    sources : sequence of str
        Source names of ``config.sources``.
    start, end : pandas.Timestamp
        First and last nature time simulated.
    probe : str or None
        A name of :data:`~obscast.components.osse.probes.PROBES`; None: unmoved.
    seed : int
        Thinning seed.

    Returns
    -------
    dict of str to pandas.DataFrame
        Source name -> prepared table (:func:`obscast.components.data.tables.prepare_table`); empty
        tables are left out, as in ``load_tables``.
    """
    kinds = {name: config.sources[name].kind for name in sources}
    moved = move_networks({k: networks[k] for k in set(kinds.values())}, probe, seed)
    n_fov = len(networks["satellite"]) if "satellite" in networks else None
    raw = resimulate_tables(nature, moved, kinds, config.osse.error_model, start, end, unmoved_satellite_footprints=n_fov)
    return {name: prepare_table(table, name=name)[0] for name, table in raw.items() if not table.empty}


def probe_scores(config: Config, model: Any, data: ExperimentData, store: Store, probes: Sequence[str] | None = None,
                 every: int | None = None, n_steps: int | None = None, *, seed: int = THIN_SEED,
                 networks: dict[str, pd.DataFrame] | None = None) -> pd.DataFrame:
    """RMSE of the model on the test split with the observing network moved, per probe, channel and lead.

    Parameters
    ----------
    config : Config
        An OSSE configuration (``osse`` section, target ``nature``); ``verify.channels``,
        ``ingest.window``, ``model.history`` and ``train.device`` are used.
    model : ObsCastModel
        The trained model (unchanged; evaluated in ``eval`` mode).
    data : ExperimentData
        As :func:`obscast.components.data.experiment.build_datasets` made it: its test split (init
        times, spin-up), statistics, truth and tables (their source names) are used.
    store : Store
        Holds the nature run ``gridded/nature.zarr``.
    probes : sequence of str, optional
        Names of :data:`~obscast.components.osse.probes.PROBES` (default ``verify.probes``).
    every : int, optional
        Score every ``every``-th test init after the spin-up (default ``verify.probe_every``); with
        ``verify.probe_days``, only the inits of the first that many days after the spin-up.
    n_steps : int, optional
        Leads scored, at most ``data.test.n_steps`` (default ``verify.probe_steps``, capped so).
    seed : int
        Thinning seed.
    networks : dict, optional
        The unmoved networks (default ``load_networks(config.osse.networks)``, with the AMV targets
        when a source is of kind ``amv``).

    Returns
    -------
    pandas.DataFrame
        Index (``channel``, ``lead_time``, e.g. ``"6 h"``), channels of ``verify.channels`` (all
        when None); columns ``unmoved`` and one per probe: the latitude-weighted RMSE in physical
        units; then ``"<probe> change %"``: ``100 (RMSE_probe - RMSE_unmoved) / RMSE_unmoved``
        (positive: the moved network does worse). ``attrs["observations"]``: probe -> source ->
        rows of the re-simulated test period; ``attrs["n_inits"]``: inits scored.

    Raises
    ------
    ConfigError
        Not an OSSE configuration, or the target is not the nature run.
    ValueError
        Unknown probe; ``every`` or ``n_steps`` below 1.
    ObscastError
        The store holds no nature run.

    Notes
    -----
    Cost: one simulation of the test period (with the spin-up windows) and one evaluation per
    probe plus the unmoved reference; a cycling model cycles through every test window each time.
    """
    from obscast.components.errors import ObscastError
    from obscast.components.training.trainer import FeatureCache
    from obscast.components.training.workflow import _every, _table
    from obscast.components.verification.evaluate import evaluate

    _check(config)
    v = config.verify
    probes = list(v.probes if probes is None else probes)
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ValueError(f"unknown network probe(s) {unknown}; expected some of {list(PROBES)}")
    every = int(v.probe_every if every is None else every)
    test = data.test
    n_steps = min(int(v.probe_steps if n_steps is None else n_steps), test.n_steps)
    if every < 1 or n_steps < 1:
        raise ValueError(f"every ({every}) and n_steps ({n_steps}) must be at least 1")
    if not store.exists(NATURE_PATH):
        raise ObscastError(f"{store.url(NATURE_PATH)}: no nature run in the store (run `obscast simulate`)")
    nature = xr.open_zarr(store.zarr_store(NATURE_PATH), consolidated=False, chunks=None)
    if networks is None:
        networks = load_networks(config.osse.networks, amv=has_amv_source(config.sources))
    sources = [name for name in data.tables if name in config.sources]
    inits = pd.DatetimeIndex(test.init_times).unique()
    window = pd.Timedelta(config.ingest.window)
    if v.probe_days is not None:  # the spin-up windows, then the first probe_days days
        inits = inits[: data.test_spinup + int(round(v.probe_days * pd.Timedelta(days=1) / window))]
    # every window the test samples read: the history windows before the first (spin-up) init to the last init
    start, end = inits[0] - config.model.history * window, inits[-1]
    members = sorted({int(m) for m in test.sample_members}) if (np.asarray(test.sample_members) >= 0).any() else None
    cycling = bool(getattr(model, "cycling", False))
    columns, observations, n_inits = {}, {}, 0
    for probe in [None, *probes]:
        label = UNMOVED if probe is None else probe
        tables = probe_tables(config, nature, networks, sources, start, end, probe, seed)
        observations[label] = {name: len(t) for name, t in tables.items()}
        if cycling:
            ds = dataset(config, tables, data.truth, data.statistics, inits, n_steps, members)
            r = evaluate(model, ds, n_steps, climatology=None, max_stations=0, device=config.train.device,
                         cache=FeatureCache(model, [ds]), spinup=data.test_spinup, every=every)
        else:
            r = evaluate(model, _every(config, data, tables, every), n_steps, climatology=None, max_stations=0,
                         device=config.train.device)
        n_inits = int(r["n_inits"])
        columns[label] = _table(r, "rmse", {"model": "model"}, v.channels)["model"]
    out = pd.DataFrame(columns)
    for probe in probes:
        out[f"{probe} change %"] = 100.0 * (out[probe] - out[UNMOVED]) / out[UNMOVED]
    out.attrs["observations"] = observations
    out.attrs["n_inits"] = n_inits
    return out
