"""The model card: ``metadata.json`` of a model version, one schema for every experiment."""

from __future__ import annotations

from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from obscast.components.store.registry import git_commit, package_version


class ModelCard(BaseModel):
    """What a trained model version is, how it was made and on what data.

    The registry adds ``name`` and ``version`` when it saves the card, and later fields such as
    ``role`` or ``scores`` (retraining, promotion); those are kept as they are.

    Attributes
    ----------
    config : dict
        The configuration it was trained with, secrets removed.
    model_args : dict
        Constructor arguments of :class:`obscast.components.model.model.ObsCastModel`.
    statistics : dict
        Normalisation statistics and climatology of the training split
        (:func:`obscast.components.data.statistics.fit_statistics`), needed to forecast.
    data : dict
        ``dataset`` (the gridded target), ``time_start``/``time_end`` of the target, the
        ``split`` and the sources used and excluded.
    step_hours : float
        Processor time step Δt in hours.
    code_version : str
        The code in one string (:func:`obscast.components.store.registry.code_version`):
        ``0.1.0+g<sha>`` (``.dirty`` when modified) from a git checkout, ``0.1.0`` when installed.
    package_version : str
        The installed obscast version, from the package metadata (``unknown`` when not
        installed); filled in when the card is made.
    git_commit : str or None
        The git commit (``<sha>`` or ``<sha>-dirty``) when the code runs from a checkout, else
        None; filled in when the card is made.
    loss_curve, validation_curve : list of float
        Per-epoch training and validation loss (normalised units).
    history : dict
        Trainer record: per-epoch metrics (``epochs``: losses, learning rate, timing), best
        epoch, device, precision, world size, seconds, parameters.
    created : str
        ISO 8601 UTC time of the save.
    """

    model_config = ConfigDict(extra="allow")

    config: dict[str, Any]
    model_args: dict[str, Any]
    statistics: dict[str, Any]
    data: dict[str, Any]
    step_hours: float = Field(gt=0)
    code_version: str
    package_version: str = Field(default_factory=package_version)
    git_commit: str | None = Field(default_factory=git_commit)
    loss_curve: list[float]
    validation_curve: list[float | None] = Field(default_factory=list)
    history: dict[str, Any] = Field(default_factory=dict)
    created: str = Field(default_factory=lambda: pd.Timestamp.now(tz="UTC").isoformat())
    name: str | None = None
    version: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict for :func:`obscast.components.store.registry.save_model`."""
        return self.model_dump(mode="json", exclude_none=True)
