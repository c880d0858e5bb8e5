"""Generalisation to other worlds: a moved mountain and a warmer climate (issue 14).

Two experiments on T21 Held-Suarez nature runs (:mod:`obscast.components.osse.nature`), with the
configured observing networks simulated from each world (the simulate stage's operators, error
model and QC, no BUFR round trip: :func:`obscast.components.verification.probes.probe_tables`)
and the one workflow (:func:`obscast.components.training.workflow.train_model`,
:func:`~obscast.components.training.workflow.verify`):

**Moved mountain.** A model is trained on a world with a Gaussian mountain
(``osse.nature.orography``: 45 N, 90 E, 2 km, e-folding half-width 1500 km; it gets the
orography as a static input channel, :func:`obscast.components.data.statistics.orography_field`)
and verified, unchanged, on the test period of three worlds: the training world, the world whose
mountain is rotated 180 degrees in longitude (45 N, 270 E) and the world whose mountain is
mirrored to the other hemisphere (45 S, 90 E). Every world is its own nature run from the same
seed; the observations are simulated from it at the same (unmoved) network. A model that learned
the local response to the mountain keeps its skill; one that memorised the mountain's downstream
climate (its stationary waves, where the storm track is) loses it. The model keeps the training
world's normalisation and (zonal) climatology -- the latter is part of what is tested.

**Warm climate.** A model trained on the control (flat, Held-Suarez) world is verified on the
test period of a world whose equilibrium temperature is 4 K warmer
(``osse.nature.equilibrium_warming_k: 4``; same equator-pole contrast), with RMSE and bias, and
then fine-tuned (warm start from the control weights, control normalisation kept) on the first
``N`` days of the warm world for each ``N`` of the fine-tuning curve: how many days of warm data
recover the control skill.

Output: a markdown table per experiment (RMSE and bias per channel and lead; the change against
the unmoved/control reference in per cent) on stdout and in ``--out`` (default
``generalisation.md``). The scale (``--smoke`` or the default) is printed with it.

Cost (default scale; 2 shared CPU cores): five T21 nature runs of 100 + 44 days (~1 min each),
observation simulation (~0.5 min per world), two trainings of a small cycling model (6 epochs)
and four fine-tunings (2 epochs each), seven verifications (~0.5 min each): about 35 min. The
trainings run a fixed number of epochs (no time limit), so the numbers do not depend on how
busy the machine is. ``--smoke`` runs the same code on 8-day worlds
with one epoch (5 min on 2 busy cores; numbers meaningless: it checks the plumbing).

The model's climatology (its residual) is the zonal mean of the training world
(``model.climatology: zonal``), so the mountain's imprint (e.g. ~200 hPa lower surface pressure
over it) must come from the network and its orography input, never from a gridpoint
climatology that would pin it to the training position.

Run::

    .venv/bin/python benchmarks/generalisation.py --smoke           # plumbing, a few minutes
    .venv/bin/python benchmarks/generalisation.py --workdir /tmp/gen # the experiments (~40 min)
    .venv/bin/python benchmarks/generalisation.py --workdir /tmp/gen --store store  # and into the verify artifact
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"

#: Channels and leads (hours) in the tables.
CHANNELS = ("air_temperature_sigma045", "eastward_wind_sigma045", "air_temperature_sigma085", "surface_air_pressure")

#: The mountain of the training world (osse.nature.orography).
MOUNTAIN = {"shape": "gaussian", "latitude_deg": 45.0, "longitude_deg": 90.0, "height_m": 2000.0, "width_km": 1500.0}
#: Warming of the warm world, K.
WARMING_K = 4.0


@dataclass(frozen=True)
class Scale:
    """Size of the experiments."""

    spinup_days: float
    train_days: int
    validation_days: int
    test_days: int
    epochs: int
    finetune_epochs: int
    finetune_days: tuple[int, ...]
    n_steps: int
    leads_h: tuple[int, ...]
    rollout: tuple[int, ...]
    latent_channels: int
    n_blocks: int
    train_minutes: float | None
    finetune_minutes: float | None

    @property
    def length_days(self) -> int:
        return self.train_days + self.validation_days + self.test_days


#: Default: the experiments (about 35 min on 2 cores; ``train.max_minutes`` bounds each training).
FULL = Scale(spinup_days=100, train_days=28, validation_days=6, test_days=10, epochs=6, finetune_epochs=2,
             finetune_days=(2, 4, 8, 16), n_steps=8, leads_h=(6, 24, 48), rollout=(1, 2, 4), latent_channels=32, n_blocks=2,
             train_minutes=None, finetune_minutes=None)
#: ``--smoke``: the same code on tiny worlds (minutes; numbers meaningless).
SMOKE = Scale(spinup_days=4, train_days=4, validation_days=2, test_days=2, epochs=1, finetune_epochs=1,
              finetune_days=(1,), n_steps=2, leads_h=(6, 12), rollout=(1,), latent_channels=8, n_blocks=1,
              train_minutes=None, finetune_minutes=None)


def _period(first: pd.Timestamp, day0: int, days: int) -> dict[str, str]:
    """``{start, end}`` of ``days`` days from day ``day0`` after ``first`` (the last 6-hourly time before the next part)."""
    start = first + pd.Timedelta(days=day0)
    end = start + pd.Timedelta(days=days) - pd.Timedelta(hours=6)
    return {"start": start.isoformat(), "end": end.isoformat()}


def make_config(scale: Scale, world: dict[str, Any], store: Path, train_days: int | None = None) -> Any:
    """The default OSSE configuration at T21 and ``scale``, in ``world`` (``osse.nature`` keys).

    ``train_days`` shortens the training period and sets the fine-tuning budget (fine-tuning on
    the first days of a world)."""
    from obscast.components.config import load_config

    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    osse = copy.deepcopy(data["osse"])
    osse.pop("nwp", None)  # no NWP baseline here
    osse["nature"] = {
        **osse["nature"], "truncation": "T21", "dt_minutes": 60, "spinup_days": scale.spinup_days,
        "length_days": scale.length_days, "output_sigma_levels": [0.25, 0.45, 0.65, 0.85], **world,
    }
    first = pd.Timestamp("2000-01-01")
    n_train = scale.train_days if train_days is None else train_days
    split = {
        "by": "period",
        "train": _period(first, 0, n_train),
        "validation": _period(first, scale.train_days, scale.validation_days),
        "test": _period(first, scale.train_days + scale.validation_days, scale.test_days),
    }
    experiment = {**data["experiment"], "split": split}
    model = {**data["model"], "name": "generalisation", "latent_grid": {"n_lat": 16, "n_lon": 32},
             "latent_channels": scale.latent_channels, "processor_hidden": scale.latent_channels,
             "decoder_hidden": scale.latent_channels, "encoder_hidden": scale.latent_channels,
             "n_blocks": scale.n_blocks, "analysis_blocks": 1}
    minutes = scale.train_minutes if train_days is None else scale.finetune_minutes
    train = {**data["train"], "epochs": scale.epochs, "rollout_schedule": list(scale.rollout), "device": "cpu", "batch_size": 4,
             **({"max_minutes": minutes} if minutes else {})}
    verify = {**data["verify"], "channels": list(CHANNELS), "withhold_every": 0, "spinup_cycles": 4}
    return load_config(None, overrides={
        "store": str(store), "osse": osse, "experiment": experiment, "model": model, "train": train,
        "forecast": {"n_steps": scale.n_steps}, "verify": verify,
    })


class World:
    """One nature run and its simulated, QC'd observation tables."""

    def __init__(self, name: str, config: Any, workdir: Path, networks: dict[str, pd.DataFrame]) -> None:
        import xarray as xr
        from obscast.components.osse.nature import config_hash, run_nature
        from obscast.components.verification.probes import probe_tables

        self.name, self.config = name, config
        nat = config.osse.nature
        t0 = time.perf_counter()
        path = run_nature(nat, str(workdir / f"nature_{config_hash(nat)}.zarr"))
        self.truth = xr.open_zarr(path, consolidated=False, chunks=None).load()
        t1 = time.perf_counter()
        times = pd.DatetimeIndex(self.truth["time"].values)
        sources = [n for n in config.experiment.inputs if n in config.sources]
        self.tables = probe_tables(config, self.truth, networks, sources, times[0], times[-1], probe=None)
        print(f"  world {name}: nature {t1 - t0:.0f} s, observations {time.perf_counter() - t1:.0f} s "
              f"({sum(len(t) for t in self.tables.values())} rows)", flush=True)


def test_data(config: Any, world: World, reference: Any) -> Any:
    """:class:`~obscast.components.data.experiment.ExperimentData` whose test split is ``world``'s and
    whose statistics and training data are ``reference``'s (the trained model's)."""
    from obscast.components.data.experiment import (
        ExperimentData,
        cycling_inits,
        dataset,
        init_times,
        period_times,
    )

    m, window = config.model, config.ingest.window
    inits = init_times(period_times(world.truth, config.experiment.split.test), config.forecast.n_steps, m.step, m.history, window)
    spin = 0
    if m.cycling:
        inits, spin = cycling_inits(world.truth, inits, window, config.verify.spinup_cycles)
    test = dataset(config, world.tables, world.truth, reference.statistics, inits, config.forecast.n_steps, None)
    return ExperimentData(reference.statistics, reference.train, reference.validation, test, world.tables, world.truth, spin)


def scores(config: Any, model: Any, data: Any, scale: Scale) -> dict[tuple[str, int], tuple[float, float]]:
    """(channel, lead h) -> (RMSE, bias) of the model on ``data``'s test split."""
    from obscast.components.training.workflow import verify

    sc = verify(config, model, data, withhold=False)["raw"]["scores"]
    out = {}
    for c in CHANNELS:
        for h in scale.leads_h:
            td = pd.Timedelta(hours=h).to_timedelta64()
            sel = {"system": "model", "channel": c, "lead_time": td}
            out[(c, h)] = (float(sc["rmse"].sel(sel).values), float(sc["bias"].sel(sel).values))
    return out


def table(columns: dict[str, dict[tuple[str, int], tuple[float, float]]], reference: str, scale: Scale) -> str:
    """Markdown: one row per (channel, lead), RMSE (bias) per column and the change of RMSE against ``reference``."""
    names = list(columns)
    head = "| channel | lead | " + " | ".join(f"{n} RMSE (bias)" for n in names)
    head += " | " + " | ".join(f"{n} vs {reference}" for n in names if n != reference) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(names) - 1)]
    for c in CHANNELS:
        for h in scale.leads_h:
            ref = columns[reference][(c, h)][0]
            cells = [f"{columns[n][(c, h)][0]:.3g} ({columns[n][(c, h)][1]:+.2g})" for n in names]
            change = [f"{100.0 * (columns[n][(c, h)][0] / ref - 1.0):+.1f} %" for n in names if n != reference]
            lines.append(f"| {c} | {h} h | " + " | ".join(cells) + " | " + " | ".join(change) + " |")
    return "\n".join(lines)



def _train_on(name: str, cfg, workdir: Path, networks: dict[str, pd.DataFrame]):
    """Simulate the world of ``cfg`` (cached in ``workdir``), train the model on it; returns (model in eval mode, datasets)."""
    from obscast.components.data.experiment import build_datasets
    from obscast.components.training.workflow import train_model

    world = World(name, cfg, workdir, networks)
    data = build_datasets(cfg, world.tables, world.truth)
    t0 = time.perf_counter()
    model, *_ = train_model(cfg, data)
    print(f"  trained on the {name} world in {time.perf_counter() - t0:.0f} s", flush=True)
    return model.eval(), data

def moved_mountain(scale: Scale, workdir: Path, networks: dict[str, pd.DataFrame]) -> str:
    """Train on the mountain world, verify on it and on the rotated and mirrored worlds."""
    from obscast.components.osse.nature import OrographyConfig

    mountain = OrographyConfig(**MOUNTAIN)
    worlds = {
        "unmoved": mountain,
        "rotated 180": mountain.rotated(180.0),
        "mirrored": mountain.mirrored(),
    }
    cfg = make_config(scale, {"orography": mountain.model_dump()}, workdir)
    model, data = _train_on("mountain", cfg, workdir, networks)
    cols = {"unmoved": scores(cfg, model, data, scale)}
    for name, oro in worlds.items():
        if name == "unmoved":
            continue
        w = World(name, make_config(scale, {"orography": oro.model_dump()}, workdir), workdir, networks)
        cols[name] = scores(cfg, model, test_data(cfg, w, data), scale)
    where = {n: f"{o.latitude_deg:+.0f} lat, {o.longitude_deg:.0f} E" for n, o in worlds.items()}
    return ("### Moved mountain\n\nTrained on the mountain world (" + where["unmoved"] + "); verified on the test period of "
            + ", ".join(f"{n} ({where[n]})" for n in worlds) + ".\n\n" + table(cols, "unmoved", scale))


def warm_climate(scale: Scale, workdir: Path, networks: dict[str, pd.DataFrame]) -> str:
    """Verify the control-trained model on the warm world, then fine-tune on N warm days."""
    from obscast.components.data.experiment import build_datasets
    from obscast.components.training.workflow import train_model

    cfg = make_config(scale, {}, workdir)
    model, data = _train_on("control", cfg, workdir, networks)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    warm_cfg = make_config(scale, {"equilibrium_warming_k": WARMING_K}, workdir)
    warm = World(f"+{WARMING_K:g} K", warm_cfg, workdir, networks)
    cols = {"control": scores(cfg, model, data, scale), f"+{WARMING_K:g} K": scores(cfg, model, test_data(cfg, warm, data), scale)}
    for days in scale.finetune_days:
        ft_cfg = make_config(scale, {"equilibrium_warming_k": WARMING_K}, workdir, train_days=days)
        # fine-tuning keeps the control normalisation and climatology (the model's inputs)
        ft_data = build_datasets(ft_cfg, warm.tables, warm.truth, statistics=data.statistics)
        t0 = time.perf_counter()
        tuned, *_ = train_model(ft_cfg, ft_data, epochs=scale.finetune_epochs, init_state=state,
                                learning_rate=cfg.train.learning_rate / 4)
        print(f"  fine-tuned on {days} warm days in {time.perf_counter() - t0:.0f} s", flush=True)
        tuned.eval()
        cols[f"+{WARMING_K:g} K tuned {days} d"] = scores(cfg, tuned, ft_data, scale)
    return (f"### Warm climate (+{WARMING_K:g} K equilibrium temperature)\n\nTrained on the control world; verified on its "
            f"test period and on that of the +{WARMING_K:g} K world, unchanged and fine-tuned ({scale.finetune_epochs} epochs, "
            f"learning rate / 4) on the first N days of the warm world (the fine-tuning curve).\n\n" + table(cols, "control", scale))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny worlds and one epoch: checks the plumbing in minutes")
    p.add_argument("--workdir", default=None, help="nature runs are cached here (default a temporary directory)")
    p.add_argument("--out", default="generalisation.md", help="markdown output")
    p.add_argument("--only", choices=["mountain", "warm"], default=None)
    p.add_argument("--store", default=None, help="also write the tables to <store>/scores/generalisation/generalisation.md, "
                   "where the verify flow's score table and artifact show them")
    args = p.parse_args(argv)

    import tempfile

    import torch
    from obscast.components.osse.networks import load_networks

    torch.set_num_threads(2)
    scale = SMOKE if args.smoke else FULL
    tmp = tempfile.TemporaryDirectory() if args.workdir is None else None
    workdir = Path(args.workdir or tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = make_config(scale, {}, workdir)
    networks = load_networks(cfg.osse.networks, amv=any(s.kind == "amv" for s in cfg.sources.values()))
    t0 = time.perf_counter()
    title = (f"## Generalisation ({'smoke' if args.smoke else 'full'} scale: T21, spin-up {scale.spinup_days:g} d, "
             f"train/validation/test {scale.train_days}/{scale.validation_days}/{scale.test_days} d, {scale.epochs} epochs)")
    parts = [title]
    if args.only in (None, "mountain"):
        parts.append(moved_mountain(scale, workdir, networks))
    if args.only in (None, "warm"):
        parts.append(warm_climate(scale, workdir, networks))
    parts.append(f"Wall time {time.perf_counter() - t0:.0f} s.")
    text = "\n\n".join(parts) + "\n"
    Path(args.out).write_text(text)
    if args.store:
        from obscast.components.store.storage import Store

        print("written to", Store(args.store).write_bytes(text.encode(), "scores", "generalisation", "generalisation.md"))
    print(text)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
