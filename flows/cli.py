"""The ``obscast`` command line: ``run``, ``ingest``, ``train``, ``forecast``, ``verify``.

Every sub-command runs the Prefect flow of the same name (ephemeral Prefect by default; with
``PREFECT_API_URL`` set the runs appear on that server). Errors in the input or the
configuration end with one line naming the file or key and what was expected, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

from obscast.components.errors import ObscastError

#: Lock file in ``PREFECT_HOME`` held while this machine's temporary Prefect server starts.
EPHEMERAL_START_LOCK = "obscast-ephemeral-server.lock"


def package_version() -> str:
    """The installed obscast version from the package metadata, or ``unknown`` when not installed."""
    from importlib import metadata

    try:
        return metadata.version("obscast")
    except metadata.PackageNotFoundError:
        return "unknown"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", default=None, help="YAML configuration (default: the embedded configs/default.yaml)")
    p.add_argument("--store", default=None, help="store URL, a local directory or s3://bucket/prefix (overrides the configuration)")
    p.add_argument("--json", action="store_true", help="print the flow's result as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-command per flow."""
    parser = argparse.ArgumentParser(
        prog="obscast",
        description="obscast: observations to forecasts. ingest -> encode -> forecast -> decode -> verify, as Prefect flows.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the installed obscast version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("run", help="the whole pipeline: (simulate,) ingest, train, forecast, verify", description="Run (simulate ->) ingest -> train -> forecast -> verify as one Prefect flow.")
    _common(p)
    p = sub.add_parser("simulate", help="OSSE: nature run and simulated observations as BUFR", description="Run (or reuse) the OSSE nature run with dinosaur and write simulated SYNOP, TEMP, aircraft and satellite BUFR at real network positions.")
    _common(p)
    p = sub.add_parser("baseline", help="OSSE: the classical NWP baseline (cycled 3D-Var, twin forecasts)",
                       description="Cycle a 3D-Var of the ingested observations with the nature run's dycore (identical twin) and at a "
                       "coarser truncation (fraternal twin) through the test period and forecast from every osse.nwp.every-th "
                       "test init (cached by the configuration's hash); verify scores them beside the model.")
    _common(p)
    p = sub.add_parser("ingest", help="read raw BUFR/GRIB into the store, with QC", description="Ingest every configured observation source and gridded dataset into zarr, with QC and quarantine.")
    _common(p)
    p.add_argument("--strict", action="store_true",
                   help="fail on the first file that cannot be decoded (default: quarantine such a file whole and ingest the rest)")
    p = sub.add_parser("backfill", help="ingest one source over a time range, window by window",
                       description="Ingest one observation source over (START, END], window by window (ingest.window), skipping the "
                       "windows already stored; windows are read in parallel (--workers N: a Dask cluster of N processes).")
    _common(p)
    p.add_argument("--source", required=True, help="a source name of the configuration (sources.<name>)")
    p.add_argument("--start", required=True, help="UTC time, ISO 8601, e.g. 2000-01-01T00:00 (exclusive)")
    p.add_argument("--end", required=True, help="UTC time, ISO 8601 (inclusive); whole windows overlapping (start, end] are ingested")
    p.add_argument("--workers", type=int, default=1, help="worker processes of a local Dask cluster (default 1: no Dask)")
    p.add_argument("--address", default=None, metavar="tcp://HOST:PORT",
                   help="run the windows on the workers of this existing Dask scheduler (default: ingest.dask_address, else this machine)")
    p = sub.add_parser("train", help="train encoders, processor and decoders", description="Train a new model version on the gridded dataset's transitions and save it to the model registry.")
    _common(p)
    p.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    p = sub.add_parser("forecast", help="roll the model out from an init time", description="Write a gridded forecast and station forecasts from an init time.")
    _common(p)
    p.add_argument("--init-time", default=None, help="init time, ISO 8601 (default: from the configuration)")
    p.add_argument("--steps", type=int, default=None, help="number of processor steps (lead times)")
    p.add_argument("--version", default=None, help="model version (default: the champion, else the newest)")
    p = sub.add_parser("verify", help="score the model against persistence and climatology", description="Latitude-weighted RMSE and bias per variable and lead time on held-out members; writes a table, a plot and a Prefect artifact.")
    _common(p)
    p.add_argument("--version", default=None, help="model version (default: the champion, else the newest)")
    p = sub.add_parser("ensemble", help="ensemble forecast (perturbed observations) and its CRPS, spread/skill, rank histogram",
                       description="Forecast ensemble.members members, each cycling the model's analyses on observations perturbed by "
                       "their errors (an ensemble of data assimilations); write the members and station quantiles and exceedance "
                       "probabilities, then score the ensemble on test inits (fair CRPS, spread/skill, rank histogram) beside the model.")
    _common(p)
    p.add_argument("--init-time", default=None, help="init time, ISO 8601 (default: from the configuration)")
    p.add_argument("--steps", type=int, default=None, help="number of processor steps (lead times) of the forecast")
    p.add_argument("--version", default=None, help="model version (default: the champion, else the newest)")
    p.add_argument("--no-score", action="store_true", help="only the forecast products, no scores on the test inits")
    p = sub.add_parser("retrain", help="train a challenger, promote it only if it beats the champion",
                       description="Train a challenger warm-started from the champion, verify both on the same test set and promote "
                       "the challenger only if its normalised RMSE is lower by more than the margin (retrain: in the configuration).")
    _common(p)
    p.add_argument("--epochs", type=int, default=None, help="override retrain.epochs (default: train.epochs)")
    p.add_argument("--margin", type=float, default=None, help="override retrain.margin, the required relative improvement (0.01 = 1 %%)")
    p.add_argument("--learning-rate", type=float, default=None, help="override retrain.learning_rate (default: train.learning_rate)")
    p = sub.add_parser("models", help="the model registry: list, show, promote, rollback", description="Inspect the model registry and choose the champion that forecasts use.")
    msub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("list", "versions with their training loss and the champion"), ("show", "one version's metadata"),
                         ("promote", "make a version the champion"), ("rollback", "restore the previous champion")):
        q = msub.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        _common(q)
        if action in ("show", "promote"):
            q.add_argument("version", help="model version, e.g. v0002")
    p = sub.add_parser("serve", help="serve the deployments of infra/prefect.yaml on the server at PREFECT_API_URL",
                       description="Register the deployments of infra/prefect.yaml (cron schedules, parameter defaults, concurrency "
                       "limits) with the Prefect server at PREFECT_API_URL and run their flow runs until Ctrl-C. No work pool needed.")
    _common(p)
    p.add_argument("--deployment", "-d", action="append", default=None, metavar="NAME",
                   help="serve only this deployment (verify/daily, verify or daily); repeatable; default: all")
    p.add_argument("--paused-schedules", action="store_true", help="declare the schedules inactive: runs start only when triggered")
    p.add_argument("--limit", type=int, default=None, help="most flow runs at a time in this process (default: no limit)")
    p.add_argument("--prefect-file", default=None, help="deployment file (default: infra/prefect.yaml)")
    return parser


def _quiet_tracebacks() -> None:
    """Keep Prefect's failure logs to their message: our own errors are explained in one line."""
    import prefect  # noqa: F401  (configures Prefect's logging first)

    class _NoObscastTraceback(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            if record.exc_info and isinstance(record.exc_info[1], ObscastError):
                record.msg = f"{record.getMessage().splitlines()[0]} {record.exc_info[1]}"
                record.args = ()
                record.exc_info = None
                record.exc_text = None
            return True

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_NoObscastTraceback())
    for handler in logging.getLogger("prefect").handlers:
        handler.addFilter(_NoObscastTraceback())


def start_ephemeral_server() -> None:
    """Start Prefect's temporary (ephemeral) server for this process, one process at a time.

    Without ``PREFECT_API_URL`` every Prefect process starts its own temporary server on the
    SQLite database in ``PREFECT_HOME``, and each server runs the database migrations as it starts.
    Two ``obscast`` commands started at the same moment on a new machine then ran the migrations
    concurrently and failed ("no such table", "Application startup failed"). Here the start
    (migrations included: the server answers its health check only after them) happens under a
    file lock in ``PREFECT_HOME``, so a second command waits, then finds the database migrated.
    The flows reuse the server started here (Prefect keeps one per process). Nothing is done when
    ``PREFECT_API_URL`` is set or ephemeral mode is off.

    Raises
    ------
    ObscastError
        If another command holds the lock for longer than the startup timeout plus a minute, or
        the server does not start; the message says to retry (no traceback).
    """
    from filelock import FileLock, Timeout
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    home = Path(settings.home)
    wait = settings.server.ephemeral.startup_timeout_seconds + 60
    try:
        home.mkdir(parents=True, exist_ok=True)
        with FileLock(str(home / EPHEMERAL_START_LOCK), timeout=wait):
            SubprocessASGIServer().start()
    except Timeout:
        raise ObscastError(f"{home / EPHEMERAL_START_LOCK}: another obscast command has been starting Prefect's temporary server "
                           f"for over {wait} s; retry when it has started, or run a server (`python -m obscast.infra.stack start`) "
                           "and set PREFECT_API_URL") from None
    except Exception as exc:  # noqa: BLE001  (whatever Prefect raised: explained in one line)
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300].rstrip(".")
        raise ObscastError(f"Prefect's temporary server (PREFECT_HOME={home}) did not start: {detail}; retry, or run a server "
                           "(`python -m obscast.infra.stack start`) and set PREFECT_API_URL") from None


def _dispatch(args: argparse.Namespace) -> tuple[Any, Callable[[Any], str]]:
    from obscast.components.config import load_config

    # Validate the configuration before any flow starts.
    load_config(args.config, {"store": args.store} if args.store else None)
    kw = {"config_path": args.config, "store": args.store}
    if args.command == "models":
        return _models(args), _describe_models
    if args.command != "serve":  # serve needs PREFECT_API_URL (checked by serve_deployments)
        start_ephemeral_server()
    if args.command == "serve":
        from obscast.infra.deploy import PREFECT_FILE, serve_deployments

        # --config/--store become the deployments' parameter defaults (absolute: runs may start elsewhere).
        defaults = {"config_path": args.config and os.path.abspath(args.config),
                    "store": args.store and (args.store if "://" in args.store else os.path.abspath(args.store))}
        served = serve_deployments(args.deployment, {k: v for k, v in defaults.items() if v}, args.paused_schedules, args.limit,
                                   args.prefect_file or PREFECT_FILE)
        return served, lambda r: "stopped serving " + ", ".join(r)
    if args.command == "baseline":
        from obscast.flows.baseline import baseline_flow

        return baseline_flow(**kw), lambda r: (f"NWP baseline {r['hash']} ({'cached' if r['cached'] else 'computed'}): {', '.join(r['systems'])}"
                                               if r else "no osse.nwp section in the configuration: nothing to do")
    if args.command == "simulate":
        from obscast.flows.simulate import simulate_flow

        return simulate_flow(**kw), lambda r: f"nature run: {r['nature']}\nsimulated observations ({r['status']}): {r['rows']}"
    if args.command == "ingest":
        from obscast.flows.ingest import ingest_flow

        return ingest_flow(**kw, strict=args.strict), _describe_ingest
    if args.command == "backfill":
        from obscast.flows.backfill import backfill_flow, check_request, resolve_address

        config = load_config(args.config, {"store": args.store} if args.store else None)
        check_request(config, args.source, args.start, args.end, args.workers, args.config,
                      resolve_address(config, args.address))  # one-line errors before any flow starts
        return backfill_flow(**kw, source=args.source, start=args.start, end=args.end, workers=args.workers, address=args.address), _describe_backfill
    if args.command == "train":
        from obscast.flows.train import train_flow

        return train_flow(**kw, epochs=args.epochs), lambda r: f"model {r['name']} {r['version']} written to {r['url']} (final loss {r['loss_curve'][-1]:.4f})"
    if args.command == "forecast":
        from obscast.flows.forecast import forecast_flow

        return forecast_flow(**kw, init_time=args.init_time, n_steps=args.steps, version=args.version), _describe_outputs
    if args.command == "ensemble":
        from obscast.flows.ensemble import ensemble_flow

        return (ensemble_flow(**kw, init_time=args.init_time, n_steps=args.steps, version=args.version, score=not args.no_score),
                lambda r: "\n".join([f"ensemble members: {r['ensemble']}"] + [f"{label}: {r[k]}" for k, label in (
                    ("stations", "station quantiles and probabilities"), ("table", "score table"), ("plot", "rank histograms"),
                    ("markdown", "scores")) if k in r]))
    if args.command == "retrain":
        from obscast.flows.retrain import retrain_flow

        return retrain_flow(**kw, epochs=args.epochs, margin=args.margin, learning_rate=args.learning_rate), _describe_retrain
    if args.command == "verify":
        from obscast.flows.verify import verify_flow

        return verify_flow(**kw, version=args.version), _describe_outputs
    from obscast.flows.pipeline import pipeline_flow

    return pipeline_flow(**kw), _describe_outputs


def _models(args: argparse.Namespace) -> dict[str, Any]:
    """Registry actions (no Prefect flow: they are quick metadata operations)."""
    from obscast.components.store import registry
    from obscast.components.config import load_config
    from obscast.components.store.storage import Store

    config = load_config(args.config, {"store": args.store} if args.store else None)
    store, name = Store(config.store, config.storage_options), config.model.name
    if args.action == "promote":
        registry.promote(store, name, args.version, reason="promoted by hand")
    elif args.action == "rollback":
        registry.rollback(store, name)
    if args.action == "show":
        return {"action": "show", "metadata": registry.load_model_files(store, name, args.version)[1]}
    rows = []
    for v in registry.list_versions(store, name):
        meta = store.read_json("models", name, v, "metadata.json")
        rows.append({"version": v, "created": meta.get("created"), "final_loss": (meta.get("loss_curve") or [None])[-1],
                     "code_version": meta.get("code_version"), "data": meta.get("data")})
    return {"action": args.action, "name": name, "champion": registry.champion(store, name), "versions": rows}


def _describe_models(result: dict[str, Any]) -> str:
    if result["action"] == "show":
        return json.dumps(result["metadata"], indent=2, default=str)
    lines = [f"model {result['name']}: champion {result['champion'] or '(none: forecasts use the newest)'}"]
    for row in result["versions"]:
        mark = "*" if row["version"] == result["champion"] else " "
        loss = "n/a" if row["final_loss"] is None else f"{row['final_loss']:.4f}"
        lines.append(f" {mark} {row['version']}  created {row['created']}  final loss {loss}  code {row['code_version']}")
    return "\n".join(lines)


def _describe_retrain(result: dict[str, Any]) -> str:
    return f"{result['markdown']}\nchallenger {result['challenger']}: {'promoted' if result['promoted'] else 'not promoted'}; " \
           f"champion of {result['name']} is {result['champion']}\ndecision table: {result['table']}"


def _describe_backfill(result: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in result["counts"].items() if v) or "no windows"
    return (f"{result['source']}: {len(result['windows'])} windows in ({result['start']}, {result['end']}]: {counts} "
            f"({result['scanned']} of {result['files']} files scanned) -> {result['obs']}")


def _describe_ingest(result: dict[str, Any]) -> str:
    lines = []
    for name, s in result["sources"].items():
        rejected = {k: v for k, v in s["qc"].items() if k not in ("total", "accepted")}
        lines.append(f"{name}: {s['qc']['total']} rows, {s['qc']['accepted']} accepted, quarantined {rejected} -> {s['obs']}")
        lines += [f"{name}: file quarantined whole: {b['reason']}" for b in s.get("bad_files", [])]
    for name, g in result["gridded"].items():
        lines.append(f"{name}: {g['status']} -> {g['url']}")
    return "\n".join(lines)


def _describe_outputs(result: dict[str, Any]) -> str:
    labels = {
        "nature": "nature run",
        "forecast": "gridded forecast",
        "stations": "station forecasts",
        "scores": "scores",
        "plot": "RMSE plot",
        "table": "score table",
        "model": "model",
    }
    out = []
    if "ingest" in result:
        out.append(_describe_ingest(result["ingest"]))
    for key, label in labels.items():
        if key in result:
            out.append(f"{label}: {result[key]}")
    if "markdown" in result:
        out.append(result["markdown"])
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``obscast`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The ephemeral server (no PREFECT_API_URL) can take over 20 s to start on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    _quiet_tracebacks()
    try:
        result, describe = _dispatch(args)
    except ObscastError as exc:
        print(f"obscast: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str) if args.json else describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
