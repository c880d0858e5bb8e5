"""Baseline flow: the OSSE's classical NWP baseline, cycled 3D-Var and twin forecasts (orchestration only).

Runs (or reuses, cached by its configuration's hash) :func:`obscast.components.nwp.baseline.experiment_baseline`
for the experiment's test period; the verify flow scores it beside the model.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from obscast.components.data.experiment import build_datasets, load_tables, open_target
from obscast.flows.common import load, store_of, task
from prefect import flow, get_run_logger


@task(name="nwp-baseline")
def baseline_task(config) -> dict[str, Any]:
    """Cycle both NWP twins through the test period and forecast; returns where they are stored."""
    from obscast.components.nwp.baseline import experiment_baseline

    logger = get_run_logger()
    st = store_of(config)
    truth = open_target(st, config)
    data = build_datasets(config, load_tables(st, config), truth)
    test_inits = data.test.init_times[data.test_spinup:]
    last: dict[str, int] = {}

    def progress(phase: str, done: int, total: int) -> None:
        step = max(1, total // 4)
        if done == total or done // step != last.get(phase, -1):
            last[phase] = done // step
            logger.info("%s: cycle %d/%d", phase, done, total)

    out = experiment_baseline(st, config, truth, pd.DatetimeIndex(test_inits), run=True, progress=progress)
    if out is None:
        logger.info("no osse.nwp section: no NWP baseline")
        return {}
    datasets, cached = out
    for name, ds in datasets.items():
        logger.info("%s%s: %d forecasts, %d analyses, B x%s, O-B %s -> O-A %s (normalised)", name, " (cached)" if cached else "",
                    ds.sizes["init_time"], ds.sizes["time"], ds.attrs.get("variance_scale"), ds.attrs.get("omb_rms_normalised"),
                    ds.attrs.get("oma_rms_normalised"))
    return {"systems": list(datasets), "cached": cached, "hash": next(iter(datasets.values())).attrs.get("baseline_hash")}


@flow(name="baseline", log_prints=True)
def baseline_flow(config_path: str | None = None, store: str | None = None) -> dict[str, Any]:
    """Run (or reuse) the NWP baseline of the configured OSSE (``osse.nwp``).

    Returns
    -------
    dict
        ``systems``, ``cached`` and ``hash`` (empty without ``osse.nwp``).
    """
    return baseline_task(load(config_path, store))
