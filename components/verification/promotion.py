"""The promotion gate of ``obscast retrain``: is the challenger better than the champion? (Prefect-free)

Both models are verified on the same test set with the same scoring code (held-out members for
the ERA5 configuration, the test period for an OSSE) and give a score table: rows ``(channel,
lead_time)``, columns ``model`` and ``climatology`` (latitude-weighted RMSE, physical units), as
:func:`obscast.components.training.workflow.verify` (``gridded``) and
return.

The **score** of a model is its RMSE normalised by the climatology's RMSE, averaged over every
channel and lead time (so variables of different units weigh the same)::

    S = mean over (channel, lead) of  RMSE_model(channel, lead) / RMSE_clim(channel, lead)

with the climatology RMSE of the champion's verification as the common reference. Lower is
better; S < 1 beats climatology. The **relative improvement** is ``1 - S_challenger /
S_champion``, and the challenger is promoted only if it is larger than ``margin`` (e.g.
``0.01``: at least 1 % lower normalised RMSE), so ``margin = 0`` still demands a strictly lower
score. A challenger with a non-finite RMSE (a diverged training) is never promoted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Decision", "compare", "decide", "normalised_score"]


@dataclass(frozen=True)
class Decision:
    """The gate's verdict.

    Attributes
    ----------
    promote : bool
        True when the challenger is to become the champion.
    reason : str
        One sentence saying why, with both scores, the improvement and the margin.
    champion_score, challenger_score : float
        Normalised scores ``S`` (dimensionless; ``inf`` when a model has a non-finite RMSE).
    improvement : float
        ``1 - challenger_score / champion_score`` (e.g. 0.05 = 5 % better; negative: worse).
    margin : float
        The required relative improvement.
    table : pandas.DataFrame
        Rows ``(channel, lead_time)``; columns ``champion``, ``challenger``, ``climatology``
        (RMSE, physical units) and ``champion_norm``, ``challenger_norm`` (RMSE / climatology RMSE).
    """

    promote: bool
    reason: str
    champion_score: float
    challenger_score: float
    improvement: float
    margin: float
    table: pd.DataFrame

    def to_dict(self) -> dict:
        """JSON-able form (for metadata.json and the flow's result); the table as records."""
        rows = self.table.reset_index().to_dict(orient="records")
        clean = [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()} for r in rows]
        finite = lambda x: x if np.isfinite(x) else None  # noqa: E731
        return {
            "promote": self.promote, "reason": self.reason, "champion_score": finite(self.champion_score),
            "challenger_score": finite(self.challenger_score), "improvement": finite(self.improvement),
            "margin": self.margin, "table": clean,
        }


def _check_table(table: pd.DataFrame, name: str) -> None:
    missing = {"model", "climatology"} - set(table.columns)
    if missing:
        raise ValueError(f"{name} score table: missing columns {sorted(missing)} (have {list(table.columns)}); expected RMSE of 'model' and 'climatology'")
    if list(table.index.names) != ["channel", "lead_time"]:
        raise ValueError(f"{name} score table: expected the index (channel, lead_time), found {list(table.index.names)}")
    if table.empty:
        raise ValueError(f"{name} score table is empty")


def compare(champion: pd.DataFrame, challenger: pd.DataFrame) -> pd.DataFrame:
    """Side-by-side RMSE of champion and challenger, raw and normalised by climatology.

    Parameters
    ----------
    champion, challenger : pandas.DataFrame
        Score tables, rows ``(channel, lead_time)``, columns ``model`` and ``climatology`` (RMSE).

    Returns
    -------
    pandas.DataFrame
        Rows ``(channel, lead_time)`` in the champion's order; columns ``champion``,
        ``challenger``, ``climatology`` (the champion's reference) and ``champion_norm``,
        ``challenger_norm``. Rows where the reference has no verifying data (NaN) stay, as NaN,
        and do not count in :func:`normalised_score`.

    Raises
    ------
    ValueError
        If a table lacks the columns or index, or the tables' rows differ (not the same test
        set), or a climatology RMSE is zero or negative.
    """
    _check_table(champion, "champion")
    _check_table(challenger, "challenger")
    if set(champion.index) != set(challenger.index):
        only = sorted(set(champion.index) ^ set(challenger.index))[:5]
        raise ValueError(f"champion and challenger were not scored on the same channels and lead times (differ at {only})")
    reference = champion["climatology"].astype(float)
    if (reference <= 0).any():
        raise ValueError(f"climatology RMSE must be positive to normalise by it; found {reference[reference <= 0].to_dict()}")
    out = pd.DataFrame(
        {
            "champion": champion["model"].astype(float),
            "challenger": challenger["model"].reindex(champion.index).astype(float),
            "climatology": reference,
        }
    )
    out["champion_norm"] = out["champion"] / reference
    out["challenger_norm"] = out["challenger"] / reference
    return out


def normalised_score(norm: pd.Series, reference: pd.Series) -> float:
    """Mean of the normalised RMSE over the rows where the reference is finite.

    Parameters
    ----------
    norm : pandas.Series
        RMSE / climatology RMSE per ``(channel, lead_time)``.
    reference : pandas.Series
        Climatology RMSE on the same rows; rows where it is NaN (no verifying data) are left out.

    Returns
    -------
    float
        The score ``S``; ``inf`` if the model's value is non-finite on a counted row.

    Raises
    ------
    ValueError
        If no row has a finite reference.
    """
    counted = np.isfinite(reference.to_numpy(float))
    if not counted.any():
        raise ValueError("no channel and lead time has a finite climatology RMSE to normalise by")
    values = norm.to_numpy(float)[counted]
    return float(values.mean()) if np.isfinite(values).all() else float("inf")


def decide(champion: pd.DataFrame, challenger: pd.DataFrame, margin: float, champion_name: str = "champion",
           challenger_name: str = "challenger") -> Decision:
    """Promote the challenger only if its normalised score is better by more than ``margin``.

    Parameters
    ----------
    champion, challenger : pandas.DataFrame
        Score tables from the same test set (see the module docstring).
    margin : float
        Required relative improvement, ``0 <= margin < 1`` (0.01 = 1 %).
    champion_name, challenger_name : str
        Labels used in the reason, e.g. the registry versions ``"v0001"``.

    Returns
    -------
    Decision

    Raises
    ------
    ValueError
        If ``margin`` is outside ``[0, 1)`` or the tables do not fit (see :func:`compare`).
    """
    if not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be a relative improvement in [0, 1), found {margin!r}")
    table = compare(champion, challenger)
    s_champ = normalised_score(table["champion_norm"], table["climatology"])
    s_chal = normalised_score(table["challenger_norm"], table["climatology"])
    n = int(np.isfinite(table["climatology"].to_numpy(float)).sum())
    left_out = len(table) - n
    scope = f"over {n} channel x lead time pairs" + (f" ({left_out} without verifying data left out)" if left_out else "")
    if not np.isfinite(s_chal):
        bad = table.index[~np.isfinite(table["challenger"].to_numpy(float))].tolist()[:3]
        improvement = float("-inf")
        promote = False
        reason = (f"keep champion {champion_name}: challenger {challenger_name} has a non-finite RMSE (at {bad}; diverged training?)")
    elif not np.isfinite(s_champ):
        improvement = float("inf")
        promote = True
        reason = (f"promote challenger {challenger_name}: champion {champion_name} has a non-finite RMSE, the challenger scores "
                  f"{s_chal:.4f} {scope}")
    else:
        improvement = 1.0 - s_chal / s_champ
        promote = s_chal < s_champ * (1.0 - margin)
        verdict = f"promote challenger {challenger_name}" if promote else f"keep champion {champion_name}"
        reason = (f"{verdict}: normalised RMSE {s_chal:.4f} (challenger) vs {s_champ:.4f} (champion) {scope}, "
                  f"a relative improvement of {improvement:+.2%}, {'above' if promote else 'not above'} the margin {margin:.2%}")
    return Decision(promote, reason, s_champ, s_chal, improvement, margin, table)
