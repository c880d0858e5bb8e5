"""Helpers shared by the flows: configuration loading, the store, I/O retries and the Prefect
artifacts that the UI shows. No science here."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from prefect import task as _task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE, CachePolicy
from prefect.tasks import exponential_backoff

from obscast.components.config import Config, load_config
from obscast.components.errors import ObscastError
from obscast.components.store.storage import Store

# Tasks take DataFrames, datasets and models: never hash them for caching. A task that is cached
# says so with its own ``cache_policy`` (see :func:`config_cache`), which replaces this default.
task = partial(_task, cache_policy=NO_CACHE)


def _retry_unless_obscast_error(task, task_run, state) -> bool:
    """Retry condition: a deliberate ObscastError (bad input, a window stored with other content,
    a missing model) would fail again the same way, so only other errors (network, S3, disk I/O)
    are retried."""
    try:
        state.result(raise_on_failure=True)
    except ObscastError:
        return False
    except BaseException:
        return True
    return True


#: Keyword arguments for tasks that read or write the store: 3 retries after about 2, 4 and 8 s
#: (with jitter), for transient I/O errors only (never for an ObscastError).
IO_RETRIES = dict(
    retries=3, retry_delay_seconds=exponential_backoff(backoff_factor=2), retry_jitter_factor=0.5,
    retry_condition_fn=_retry_unless_obscast_error,
)

#: Keyword arguments for the tasks that commit observation windows and gridded datasets: 2 retries
#: after 1 and 5 s, for transient I/O errors only (an ObscastError such as a window stored with
#: other content, or bad input, fails at once).
WRITE_RETRIES = dict(retries=2, retry_delay_seconds=[1, 5], retry_condition_fn=_retry_unless_obscast_error)


def config_cache(stage: str, key: Callable[[Any], str]) -> CachePolicy:
    """A Prefect cache policy keyed on a configuration hash, for tasks whose first parameter is
    ``config`` (:class:`obscast.components.config.Config`).

    The cache key is ``<stage>-<16 hex digits>``: the SHA-256 of the stage name, the store URL
    (a product is cached per store) and ``key(config)`` (the hash of the configuration sections
    that determine the task's output). A second call with the same key completes as ``Cached``
    with the first call's result (persisted in Prefect's result storage) without running. A
    caller that knows the products are missing from the store runs the task with
    ``refresh_cache=True`` (``task.with_options``) so that a deleted store is rebuilt.

    Parameters
    ----------
    stage : str
        Name of the stage, e.g. ``"nature-run"``.
    key : callable
        ``key(config) -> str``.
    """

    def cache_key(context, parameters: dict[str, Any]) -> str:
        config = parameters["config"]
        digest = hashlib.sha256("\x1f".join((stage, str(config.store), key(config))).encode()).hexdigest()[:16]
        return f"{stage}-{digest}"

    return CachePolicy.from_cache_key_fn(cache_key)


class Progress:
    """A progress artifact of the running flow or task (shown as a progress bar in the Prefect UI).

    Parameters
    ----------
    key : str
        Artifact key (lower case letters, digits and dashes), e.g. ``"nature-run"``.
    description : str
        Shown beside the bar; :meth:`update` may replace it.
    min_interval : float
        Seconds between two updates sent to the API (the last update, at 100 %, is always sent).
    """

    def __init__(self, key: str, description: str, min_interval: float = 2.0):
        self.description = description
        self.min_interval = float(min_interval)
        self._last = time.monotonic()
        self.percent = 0.0
        self.id = create_progress_artifact(progress=0.0, key=key, description=description)

    def update(self, done: float, total: float, description: str | None = None) -> None:
        """Set the progress to ``done / total`` (clipped to 0-100 %)."""
        percent = 100.0 if total <= 0 else min(100.0, max(0.0, 100.0 * float(done) / float(total)))
        now = time.monotonic()
        if percent < 100.0 and now - self._last < self.min_interval:
            return
        if percent == self.percent and description is None:
            return
        self._last, self.percent = now, percent
        update_progress_artifact(artifact_id=self.id, progress=percent, description=description or self.description)


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """Publish a table artifact of the running flow (one dict per row, the same keys in each).

    Parameters
    ----------
    key : str
        Artifact key (lower case letters, digits and dashes).
    rows : list of dict
        The rows; an empty list publishes nothing.
    description : str
        Shown above the table.
    """
    if rows:
        create_table_artifact(table=rows, key=key, description=description)


def artifact_key(*parts: str) -> str:
    """An artifact key from ``parts`` (Prefect keys allow lower-case letters, digits and dashes)."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")


def _cell(text: str) -> Any:
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        return text


def markdown_tables(markdown: str) -> list[dict[str, Any]]:
    """The rows of the pipe tables of a markdown text, each row labelled with its table's heading.

    Parameters
    ----------
    markdown : str
        Text with tables such as ``"## title\n\n| a | b |\n|---|---|\n| x | 1.5 |\n"`` (the
        form of :func:`obscast.components.verification.metrics.to_markdown`).

    Returns
    -------
    list of dict
        One dict per body row: ``{"table": heading, <column>: value, ...}``; numbers are floats,
        ``n/a`` and other text stay strings. Columns missing from a table are None, so that every
        row has the same keys.
    """
    rows: list[dict[str, Any]] = []
    heading, header, in_table = "", None, False
    for line in markdown.splitlines():
        line = line.strip()
        if line.startswith("#"):
            heading, header, in_table = line.lstrip("#").strip(), None, False
        elif line.startswith("|") and line.endswith("|"):
            cells = [c.strip() for c in line[1:-1].split("|")]
            if header is None:
                header = cells
            elif all(set(c) <= set("-: ") for c in cells):
                in_table = True
            elif in_table:
                rows.append({"table": heading, **{h: _cell(c) for h, c in zip(header, cells)}})
        else:
            header, in_table = None, False
    columns = list(dict.fromkeys(k for row in rows for k in row))
    return [{c: row.get(c) for c in columns} for row in rows]


def load(config_path: str | None, store: str | None = None) -> Config:
    """Load the configuration (the embedded default when ``config_path`` is None), with an optional store override."""
    return load_config(config_path, {"store": store} if store else None)


def store_of(config: Config) -> Store:
    """The configured store."""
    return Store(config.store, config.storage_options)


def png_markdown(png: bytes, alt: str) -> str:
    """A markdown image holding ``png`` inline (``data:image/png;base64,...``).

    The Prefect UI renders such images in markdown artifacts, so a plot shows up in the UI
    without the browser needing access to the store (local disk or S3).

    Raises
    ------
    ValueError
        If ``png`` is not a PNG file (it must start with the PNG signature).
    """
    if not png.startswith(b"\x89PNG\r\n\x1a\n"):
        raise ValueError(f"{alt}: expected PNG bytes, found {png[:8]!r}")
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def publish_scores(markdown: str, png: bytes, plot_url: str, title: str, appendix: str = "") -> None:
    """Publish the ``verification-scores`` markdown artifact of the running flow (the score
    tables, then the RMSE-vs-lead-time plot shown inline, then where the plot is stored) and the
    ``verification-scores-table`` table artifact (every row of the score tables, labelled with
    its table's heading; see :func:`markdown_tables`).

    Parameters
    ----------
    markdown : str
        The score tables (markdown, as written to ``scores.md``).
    png : bytes
        The RMSE-vs-lead-time plot (``rmse.png``); about 100 kB, embedded as base64.
    plot_url : str
        Where the plot is stored (local path or ``s3://`` URL).
    title : str
        Alternative text of the image.
    appendix : str
        Markdown shown after the plot (e.g. further inline plots), in the artifact only.

    Raises
    ------
    ValueError
        If ``png`` is not a PNG file.
    """
    create_markdown_artifact(
        key="verification-scores",
        markdown=f"{markdown}\n## RMSE against lead time\n\n{png_markdown(png, title)}\n\nPlot stored at `{plot_url}`\n{appendix}",
        description="RMSE and bias vs lead time, with the RMSE plot",
    )
    publish_table("verification-scores-table", markdown_tables(markdown), f"{title}: every score, one row per system, channel and table")


def publish_products(title: str, details: list[str], products: list[tuple[str, str, str]]) -> None:
    """Publish the ``forecast-products`` markdown artifact of the running flow.

    Parameters
    ----------
    title : str
        Heading, e.g. ``"Forecast from init time 2017-01-01 00:00 UTC"``.
    details : list of str
        Bullet points (model version, lead times, observations used).
    products : list of (str, str, str)
        ``(product, URL, content)`` rows of the product table, e.g.
        ``("gridded forecast", "s3://bucket/obscast/forecasts/.../20170101T0000.zarr", "(lead_time, level, latitude, longitude)")``.
    """
    rows = "\n".join(f"| {name} | `{url}` | {content} |" for name, url, content in products)
    bullets = "".join(f"- {d}\n" for d in details)
    create_markdown_artifact(
        key="forecast-products",
        markdown=f"## {title}\n\n{bullets}\n| product | URL | content |\n|---|---|---|\n{rows}\n",
        description="Forecast products and where they are stored",
    )


@task(name="write-products", **IO_RETRIES)
def write_products(config: Config, folder: tuple[str, ...], products: dict[str, object]) -> dict[str, str]:
    """Write products below ``folder`` in the store, retried on transient I/O errors.

    Parameters
    ----------
    config : Config
        Gives the store.
    folder : tuple of str
        Path parts inside the store, e.g. ``("scores", "obscast-era5", "v0001")``.
    products : dict
        File name to content: an ``xarray.Dataset`` (written as zarr v3, replacing what is there)
        or ``bytes`` (a small object, written atomically on local disk).

    Returns
    -------
    dict
        File name to the written product's URL.

    Raises
    ------
    TypeError
        If a content is neither a Dataset nor bytes.
    """
    import xarray as xr

    st = store_of(config)
    urls = {}
    for name, content in products.items():
        if isinstance(content, xr.Dataset):
            urls[name] = st.write_dataset(content, *folder, name)
        elif isinstance(content, bytes):
            urls[name] = st.write_bytes(content, *folder, name)
        else:
            raise TypeError(f"{name}: expected an xarray.Dataset or bytes, found {type(content).__name__}")
    return urls
