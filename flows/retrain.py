"""Retrain flow: a challenger warm-started from the champion, verified against it on the same test
set, and promoted only if it is better by the configured margin (``obscast retrain``).

Orchestration only: training and scoring are :mod:`obscast.components.training.workflow` (the same
for every experiment), the gate :mod:`obscast.components.verification.promotion` and the registry
:mod:`obscast.components.store.registry`. ``champion.json`` is written only by :func:`obscast.components.store.registry.promote`,
after both verifications have succeeded; an interrupted or failed retrain leaves it untouched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from obscast.components.store import registry
from obscast.components.errors import ConfigError
from obscast.components.data.experiment import build_datasets, load_tables, open_target
from obscast.components.model.forecasting import load_model
from obscast.components.verification.metrics import to_markdown
from obscast.components.verification.promotion import Decision, decide
from obscast.components.store.storage import Store
from obscast.flows.common import load, store_of, task, write_products
from obscast.flows.train import train_task

#: Columns of the decision table as shown in the artifact.
LABELS = {"champion": "champion RMSE", "challenger": "challenger RMSE", "climatology": "climatology RMSE",
          "champion_norm": "champion / clim", "challenger_norm": "challenger / clim"}


@task(name="score-model")
def score_task(config, version: str, data) -> pd.DataFrame:
    """Gridded RMSE table (channel, lead time) x (model, persistence, climatology) of a version on the test split."""
    from obscast.components.training.workflow import verify

    model, _ = load_model(store_of(config), config.model.name, version)
    return verify(config, model, data, withhold=False)["gridded"]


def _challenge(config, st: Store, name: str, incumbent: str | None) -> tuple[str, pd.DataFrame, pd.DataFrame | None]:
    """Train a challenger (warm-started from the incumbent's weights: same architecture, the
    configuration's model arguments), save it, score it and the incumbent on the same test split."""
    logger = get_run_logger()
    init_state = registry.load_model_files(st, name, incumbent)[0] if incumbent else None
    if incumbent:
        logger.info("warm start: the challenger starts from the weights of %s", incumbent)
    version = train_task(config, None, init_state, extra={
        "role": registry.CHALLENGER, "warm_start_from": incumbent, "retrain": {"status": "trained; verification pending"}})["version"]
    tables, truth = load_tables(st, config), open_target(st, config)

    def score(v: str) -> pd.DataFrame:
        meta = registry.load_model_files(st, name, v)[1]
        data = build_datasets(config, tables, truth, statistics=meta["statistics"])
        return score_task.with_options(name=f"score-{v}")(config, v, data)

    return version, score(version), score(incumbent) if incumbent else None


def decision_markdown(name: str, incumbent: str | None, challenger: str, decision: Decision | None,
                      challenger_table: pd.DataFrame, reason: str) -> str:
    """The ``retrain-decision`` artifact: per channel and lead time, the aggregate score and the decision."""
    if decision is None:
        table = challenger_table[["model", "climatology"]].rename(columns={"model": "challenger RMSE", "climatology": "climatology RMSE"})
        return to_markdown(table, f"{name}: first model {challenger} (no champion to compare)") + f"\n**Decision:** {reason}\n"
    table = decision.table.rename(columns=LABELS)
    aggregate = pd.DataFrame(
        [[np.nan, np.nan, np.nan, decision.champion_score, decision.challenger_score]],
        index=pd.MultiIndex.from_tuples([("score S (mean normalised RMSE)", "all")], names=table.index.names), columns=table.columns,
    )
    md = to_markdown(pd.concat([table, aggregate]), f"{name}: champion {incumbent} vs challenger {challenger}")
    return md + (f"\nRelative improvement 1 - S_challenger / S_champion = {decision.improvement:+.2%} (margin {decision.margin:.2%}).\n"
                 f"\n**Decision:** {reason}\n")


@flow(name="retrain", log_prints=True)
def retrain_flow(config_path: str | None = None, store: str | None = None, epochs: int | None = None,
                 margin: float | None = None, learning_rate: float | None = None) -> dict[str, Any]:
    """Train a challenger, verify it and the champion on the same test set, promote only if better.

    The challenger is warm-started from the champion (without a champion, from the newest
    version; without any model it is trained from scratch and becomes the first champion). It
    is saved as a registry version with ``metadata["role"] == "challenger"`` and, once decided,
    ``metadata["retrain"]`` (scores, decision, reason). The score and the gate are
    :func:`obscast.components.verification.promotion.decide`.

    Parameters
    ----------
    config_path, store : str, optional
        Configuration file and store override.
    epochs, margin, learning_rate : optional
        Override ``retrain.epochs`` / ``retrain.margin`` / ``retrain.learning_rate``.

    Returns
    -------
    dict
        ``name``, ``challenger``, ``incumbent``, ``champion`` (after the decision), ``promoted``,
        ``reason``, ``champion_score``, ``challenger_score``, ``improvement``, ``margin``,
        ``table`` (URL of the decision markdown) and ``markdown``.

    Raises
    ------
    ConfigError
        If ``margin`` is outside [0, 1) or ``epochs`` / ``learning_rate`` is not positive.
    """
    config = load(config_path, store)
    rc = config.retrain
    margin = rc.margin if margin is None else margin
    if not 0.0 <= margin < 1.0:
        raise ConfigError(f"retrain margin: expected a relative improvement in [0, 1) (0.01 = 1 %), found {margin!r}")
    epochs = epochs or rc.epochs or config.train.epochs
    learning_rate = learning_rate or rc.learning_rate or config.train.learning_rate
    if epochs <= 0 or learning_rate <= 0:
        raise ConfigError(f"retrain: epochs and learning_rate must be positive, found {epochs!r} and {learning_rate!r}")
    config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": epochs, "learning_rate": learning_rate})})
    logger = get_run_logger()
    st, name = store_of(config), config.model.name
    champion = registry.champion(st, name)
    versions = registry.list_versions(st, name)
    incumbent = champion or (versions[-1] if versions else None)
    if incumbent:
        logger.info("%s %s is the incumbent; training a challenger (%d epochs, learning rate %g)",
                    "champion" if champion else "no champion promoted yet: the newest version", incumbent, epochs, learning_rate)
    else:
        logger.info("no model in %s yet: training the first one from scratch; it will become the champion", st.url("models", name))

    version, challenger_table, incumbent_table = _challenge(config, st, name, incumbent)

    # Both verifications succeeded: decide, record, and only then touch champion.json.
    decision = None
    if incumbent_table is None:
        promoted, reason = True, f"promote {version}: no model in the registry before, the first model becomes the champion"
    else:
        decision = decide(incumbent_table, challenger_table, margin, incumbent, version)
        promoted, reason = decision.promote, decision.reason
    record = {"status": "decided", "incumbent": incumbent, "margin": margin, "promoted": promoted, "reason": reason,
              "decision": decision.to_dict() if decision else None}
    registry.update_metadata(st, name, version, {"retrain": record})
    markdown = decision_markdown(name, incumbent, version, decision, challenger_table, reason)
    table_url = write_products(config, ("scores", name, version), {"retrain-decision.md": markdown.encode()})["retrain-decision.md"]
    create_markdown_artifact(key="retrain-decision", markdown=markdown, description=f"Retrain of {name}: champion vs challenger {version}")
    if promoted:
        registry.promote(st, name, version, reason=reason)
    elif champion is None:
        # No champion yet and the challenger lost: make the kept incumbent the champion explicitly.
        registry.promote(st, name, incumbent, reason=f"kept by retrain: {reason}")
    now = registry.champion(st, name)
    logger.info("%s; champion now %s", reason, now)
    return {
        "name": name, "challenger": version, "incumbent": incumbent, "champion": now, "promoted": promoted, "reason": reason,
        "champion_score": decision.champion_score if decision else None, "challenger_score": decision.challenger_score if decision else None,
        "improvement": decision.improvement if decision else None, "margin": margin, "table": table_url, "markdown": markdown,
    }
