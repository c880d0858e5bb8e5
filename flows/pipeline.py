"""The end-to-end flow: ingest -> train -> forecast -> verify (``obscast run``)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from obscast.flows.forecast import forecast_flow
from obscast.flows.ingest import ingest_flow
from obscast.flows.train import train_flow
from obscast.flows.verify import verify_flow


@flow(name="pipeline", log_prints=True)
def pipeline_flow(config_path: str | None = None, store: str | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Run the stages as subflows (with an ``osse`` section: simulate first); returns every
    product's location and the score table."""
    from obscast.flows.common import load

    out: dict[str, Any] = {}
    if load(config_path, store).osse is not None:
        from obscast.flows.simulate import simulate_flow

        sim = simulate_flow(config_path, store)
        out["nature"] = sim["nature"]
    ingest = ingest_flow(config_path, store)
    trained = train_flow(config_path, store, epochs=epochs)
    forecast = forecast_flow(config_path, store, version=trained["version"])
    scores = verify_flow(config_path, store, version=trained["version"])
    return {**out, "ingest": ingest, "model": trained["url"], **forecast, **scores}
