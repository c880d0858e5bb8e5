"""The end-to-end flow: (simulate ->) ingest -> (NWP baseline ->) train -> forecast -> verify (``obscast run``)."""

from __future__ import annotations

from typing import Any

from obscast.flows.forecast import forecast_flow
from obscast.flows.ingest import ingest_flow
from obscast.flows.train import train_flow
from obscast.flows.verify import verify_flow
from prefect import flow


@flow(name="pipeline", log_prints=True)
def pipeline_flow(config_path: str | None = None, store: str | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Run the stages as subflows (with an ``osse`` section: simulate first, and with
    ``osse.nwp`` the NWP baseline after the ingest); returns every product's location and the
    score table."""
    from obscast.flows.common import load

    out: dict[str, Any] = {}
    if load(config_path, store).osse is not None:
        from obscast.flows.simulate import simulate_flow

        sim = simulate_flow(config_path, store)
        out["nature"] = sim["nature"]
    ingest = ingest_flow(config_path, store)
    if load(config_path, store).osse is not None and load(config_path, store).osse.nwp is not None:
        from obscast.flows.baseline import baseline_flow

        out["baseline"] = baseline_flow(config_path, store)
    trained = train_flow(config_path, store, epochs=epochs)
    forecast = forecast_flow(config_path, store, version=trained["version"])
    scores = verify_flow(config_path, store, version=trained["version"])
    return {**out, "ingest": ingest, "model": trained["url"], **forecast, **scores}
