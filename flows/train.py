"""Train flow: a new model version of the configured experiment (orchestration only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger

from obscast.components.data.experiment import build_datasets, load_tables, open_target
from obscast.components.model.card import ModelCard
from obscast.components.store.registry import code_version, save_model
from obscast.flows.common import Progress, artifact_key, load, store_of, task


@task(name="train-model")
def train_task(config, epochs: int | None = None, init_state: dict | None = None, learning_rate: float | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the experiment's datasets, train (warm-started from ``init_state`` when given), save the
    version with its model card (``extra`` fields added to it); log every epoch and show the
    epochs done as the progress artifact ``train-<model>-progress``."""
    from obscast.components.training.workflow import is_global_zero, train_model

    logger = get_run_logger()
    st = store_of(config)
    truth = open_target(st, config)
    tables = load_tables(st, config)
    data = build_datasets(config, tables, truth)
    excluded = data.statistics.get("excluded_sources", {})
    logger.info("samples: train %d, validation %d, test %d; sources %s%s", len(data.train), len(data.validation), len(data.test),
                list(data.statistics["sources"]), f"; left out {excluded}" if excluded else "")

    total = epochs or config.train.epochs
    bar = Progress(artifact_key("train", config.model.name, "progress"), f"Training {config.model.name}: epochs done of {total}",
                   min_interval=0.0) if is_global_zero() else None

    def progress(rec: dict[str, Any]) -> None:
        logger.info("epoch %d/%d (rollout %d steps): train loss %.4f, validation loss %.4f, %.0f s",
                    rec["epoch"], total, rec["rollout"], rec["train_loss"], rec.get("val_loss", float("nan")), rec["seconds"])
        if bar is not None:
            bar.update(rec["epoch"], total, f"Training {config.model.name}: epoch {rec['epoch']} of {total}, "
                       f"train loss {rec['train_loss']:.4f}, validation loss {rec.get('val_loss', float('nan')):.4f}")

    # Checkpoints beside the models on a local store; an S3 store needs train.checkpoint_dir.
    ckpt = None if "://" in config.store else str(Path(config.store) / "checkpoints" / config.model.name)
    model, history, args, _ = train_model(config, data, progress, epochs, init_state, learning_rate, ckpt)
    if not is_global_zero():  # the other processes of a distributed training save nothing
        return {"name": config.model.name, "version": None, "url": None, "loss_curve": [e["train_loss"] for e in history["epochs"]], "model": None}
    times = pd.DatetimeIndex(truth["time"].values)
    split = config.experiment.split.model_dump(mode="json")
    card = ModelCard(
        config=config.public_dict(), model_args=args, statistics=data.statistics,
        data={"dataset": config.experiment.target.dataset, "time_start": str(times[0]), "time_end": str(times[-1]),
              "split": split, "sources": list(data.statistics["sources"]), "excluded_sources": excluded},
        step_hours=config.model.step / pd.Timedelta(hours=1), code_version=code_version(),
        loss_curve=[e["train_loss"] for e in history["epochs"]], validation_curve=[e.get("val_loss") for e in history["epochs"]],
        history=history, **(extra or {}),
    )
    version = save_model(st, config.model.name, model.state_dict(), card.to_json())
    url = st.url("models", config.model.name, version)
    logger.info("saved %s (loss %.4f -> %.4f)", url, card.loss_curve[0], card.loss_curve[-1])
    return {"name": config.model.name, "version": version, "url": url, "loss_curve": card.loss_curve, "model": url}


@flow(name="train", log_prints=True)
def train_flow(config_path: str | None = None, store: str | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Train encoders, processor and decoders; save ``models/<name>/<version>/``.

    Returns
    -------
    dict
        ``name``, ``version``, ``url`` and ``loss_curve``.
    """
    return train_task(load(config_path, store), epochs)
