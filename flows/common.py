"""Helpers shared by the flows: configuration loading, the store, I/O retries and the Prefect
artifacts that the UI shows. No science here."""

from __future__ import annotations

import base64
from functools import partial

from prefect import task as _task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from obscast.components.config import Config, load_config
from obscast.components.errors import ObscastError
from obscast.components.store.storage import Store

# Tasks take DataFrames, datasets and models: never hash them for caching.
task = partial(_task, cache_policy=NO_CACHE)


def _retry_unless_obscast_error(task, task_run, state) -> bool:
    """Retry condition: a deliberate ObscastError (bad input, missing model) would fail again the
    same way, so only other errors (network, S3, disk I/O) are retried."""
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


def publish_scores(markdown: str, png: bytes, plot_url: str, title: str) -> None:
    """Publish the ``verification-scores`` markdown artifact of the running flow: the score
    tables, then the RMSE-vs-lead-time plot shown inline, then where the plot is stored.

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

    Raises
    ------
    ValueError
        If ``png`` is not a PNG file.
    """
    create_markdown_artifact(
        key="verification-scores",
        markdown=f"{markdown}\n## RMSE against lead time\n\n{png_markdown(png, title)}\n\nPlot stored at `{plot_url}`\n",
        description="RMSE and bias vs lead time, with the RMSE plot",
    )


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
