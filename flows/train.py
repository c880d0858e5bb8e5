"""Train flow: a new model version from the gridded dataset in the store."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from components.gridstore import open_gridded
from components.obstable import ObsTable
from components.registry import code_version, save_model
from components.training import OBS_VARIABLES, model_args, train, training_metadata
from flows.common import load, store_of, task


@task(name="train-model")
def train_task(config, gridded, epochs: int | None, init_state=None):
    """Train (warm-started from ``init_state`` when given), logging every epoch's loss."""
    logger = get_run_logger()
    total = epochs or config.train.epochs

    def progress(epoch: int, loss: float) -> None:
        logger.info("epoch %d/%d loss %.4f", epoch, total, loss)

    return train(config, gridded, progress=progress, epochs=epochs, init_state=init_state)


@task(name="observation-statistics")
def obs_statistics(config) -> dict[str, dict[str, list[float]]]:
    """Mean and standard deviation of each encoder variable of each source, from the stored tables."""
    store = store_of(config)
    stats: dict[str, dict[str, list[float]]] = {}
    for name, src in config.sources.items():
        table = ObsTable(store, f"obs/{name}.zarr").read()
        if table.empty:
            continue
        stats[name] = {
            v: [float(table[v].mean()), float(max(table[v].std(), 1e-3))] for v in OBS_VARIABLES[src.kind] if table[v].notna().sum() > 1
        }
    return stats


@flow(name="train", log_prints=True)
def train_flow(config_path: str | None = None, store: str | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Train encoders, processor and decoders; save ``models/<name>/<version>/``.

    Returns
    -------
    dict
        ``name``, ``version``, ``url`` and ``loss_curve``.
    """
    config = load(config_path, store)
    if config.osse is not None:
        from flows.osse import train_osse_task

        return train_osse_task(config, epochs)
    st = store_of(config)
    gridded = open_gridded(st, config.train.dataset).load()
    result = train_task(config, gridded, epochs)
    args = model_args(config, result.channels, gridded["latitude"].values, gridded["longitude"].values)
    meta = training_metadata(config, result, gridded, args, code_version())
    meta["obs_normaliser"] = obs_statistics(config)
    version = save_model(st, config.model.name, result.model.state_dict(), meta)
    url = st.url("models", config.model.name, version)
    get_run_logger().info("saved %s (loss %.4f -> %.4f in %.1f s on %s)", url, result.loss_curve[0], result.loss_curve[-1], result.seconds, result.device)
    return {"name": config.model.name, "version": version, "url": url, "loss_curve": result.loss_curve, "model": url}
