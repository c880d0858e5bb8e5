"""Helpers shared by the flows: configuration loading and the store. No science here."""

from __future__ import annotations

from functools import partial

from prefect import task as _task
from prefect.cache_policies import NO_CACHE

from components.config import Config, load_config
from components.storage import Store

# Tasks take DataFrames, datasets and models: never hash them for caching.
task = partial(_task, cache_policy=NO_CACHE)


def load(config_path: str | None, store: str | None = None) -> Config:
    """Load the configuration (the embedded default when ``config_path`` is None), with an optional store override."""
    return load_config(config_path, {"store": store} if store else None)


def store_of(config: Config) -> Store:
    """The configured store."""
    return Store(config.store, config.storage_options)
