"""Skill against compute: obscast trained longer than the main job allows, scored beside the NWP twins.

Uses a store that already holds the OSSE (``obscast simulate && obscast ingest``, or a finished
``obscast run``) and the NWP baseline (``obscast baseline``; run here when missing). For each
entry of ``--epochs`` it trains the configured model from scratch for that many epochs (the
rollout schedule ``train.rollout_schedule`` extended with its last value), verifies it on the
test period, and prints one row: epochs, wall-clock and CPU minutes of the training (GPU hours
with ``--device cuda``), and the RMSE of obscast at the chosen channels and leads next to the
identical and fraternal NWP twins on the same inits (lead 0: the analysis error).

The levers of the skill push are measured by running it again on a changed setup:

* longer training: the rows of one run;
* backpropagation through several analysis cycles: ``OBSCAST_TRAIN__BACKPROP_CYCLES=2`` (each
  optimiser step runs two consecutive cycles; ``train.backprop_cycles``);
* innovations as encoder inputs: ``OBSCAST_MODEL__INNOVATIONS=false`` against the default (true);
* the length of the training period: ``OBSCAST_EXPERIMENT__SPLIT__TRAIN__START=...`` on the same
  store (a shorter one), or a store made with ``OBSCAST_OSSE__NATURE__LENGTH_DAYS=365`` and the
  split moved (a longer one).

Run::

    .venv/bin/python benchmarks/osse_skill.py --store store --epochs 5 20 60
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

CHANNELS = ("air_temperature_sigma045", "eastward_wind_sigma045", "surface_air_pressure")
LEADS = (0, 6, 24, 72, 120)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children, seconds."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _row(raw: dict, systems: list[str]) -> dict[str, float]:
    """RMSE per (system, channel, lead) from :func:`evaluate`'s ``scores`` / ``analysis_scores``."""
    out = {}
    sc, an = raw["scores"], raw.get("analysis_scores")
    for system in systems:
        for c in CHANNELS:
            for lead in LEADS:
                if lead == 0:
                    name = "model" if system == "model_at_baseline_inits" else system
                    v = an["rmse"].sel(system=name, channel=c).values.item() if an is not None and name in an["system"].values else np.nan
                else:
                    td = pd.Timedelta(hours=lead).to_timedelta64()
                    ok = system in sc["system"].values and td in sc["lead_time"].values
                    v = sc["rmse"].sel(system=system, channel=c, lead_time=td).values.item() if ok else np.nan
                out[f"{system}|{c}|{lead}"] = v
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "default.yaml"))
    p.add_argument("--store", default="store")
    p.add_argument("--epochs", type=int, nargs="+", default=[5, 20])
    p.add_argument("--device", default=None, help="override train.device (cpu, cuda)")
    p.add_argument("--csv", default=None, help="also write the rows to this CSV file")
    args = p.parse_args()

    import torch
    from obscast.components.config import load_config
    from obscast.components.data.experiment import (
        build_datasets,
        load_tables,
        open_target,
    )
    from obscast.components.nwp.baseline import experiment_baseline
    from obscast.components.store.storage import Store
    from obscast.components.training.workflow import train_model, verify
    from obscast.components.verification.metrics import to_markdown

    config = load_config(args.config, {"store": args.store})
    if args.device:
        config.train.device = args.device
    st = Store(config.store, config.storage_options)
    truth = open_target(st, config)
    data = build_datasets(config, load_tables(st, config), truth)
    found = experiment_baseline(st, config, truth, data.test.init_times[data.test_spinup:], run=True)
    baselines = found[0] if found else None
    schedule = list(config.train.rollout_schedule)
    rows = []
    for epochs in args.epochs:
        config.train.rollout_schedule = schedule + [schedule[-1]] * max(0, epochs - len(schedule))
        t0, c0 = time.perf_counter(), _cpu_seconds()
        model, history, _, cache = train_model(config, data, epochs=epochs)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        raw = verify(config, model, data, cache=cache, withhold=False, baselines=baselines)["raw"]
        gpu_h = wall / 3600 if (args.device or config.train.device) == "cuda" and torch.cuda.is_available() else 0.0
        row = {"epochs": epochs, "wall_min": wall / 60, "cpu_min": cpu / 60, "gpu_h": gpu_h}
        row |= _row(raw, ["model", "model_at_baseline_inits", "nwp_identical_twin", "nwp_fraternal_twin"] if baselines else ["model"])
        rows.append(row)
        print(f"epochs {epochs}: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU; final validation loss {history['epochs'][-1].get('val_loss')}", flush=True)
    table = pd.DataFrame(rows)
    if args.csv:
        table.to_csv(args.csv, index=False)
    print("\n## obscast skill against training compute (RMSE; lead 0 = analysis)\n")
    for c in CHANNELS:
        cols = ["wall_min", "cpu_min", "gpu_h"] + [k for k in table.columns if f"|{c}|" in k]
        sub = table.set_index("epochs")[cols].rename(columns={k: k.replace(f"|{c}|", " ") + " h" for k in cols if "|" in k})
        print(to_markdown(sub, c))


if __name__ == "__main__":
    main()
