"""The pipeline against a real S3 server (SeaweedFS via s3fs) gives the same results as on local disk."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from obscast.components.store.obstable import ObsTable
from obscast.components.store.storage import Store


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from obscast.infra.prefect_server import temporary_env
    from obscast.infra.s3_server import DEV_KEY, DEV_SECRET, s3_server

    keys = {k: os.environ.get(k, d) for k, d in (("AWS_ACCESS_KEY_ID", DEV_KEY), ("AWS_SECRET_ACCESS_KEY", DEV_SECRET))}
    with s3_server(tmp_path_factory.mktemp("seaweedfs")) as endpoint:
        with temporary_env(**keys, OBSCAST_STORAGE_OPTIONS=json.dumps({"endpoint_url": endpoint})):
            Store("s3://obscast-test", {"endpoint_url": endpoint}).fs.mkdir("obscast-test")
            yield endpoint


def test_pipeline_on_s3_matches_local(s3, pipeline_run):
    from obscast.flows.pipeline import pipeline_flow

    from tests.conftest import PIPELINE_EPOCHS, SAMPLES_CONFIG

    local_store, local = pipeline_run
    result = pipeline_flow(config_path=str(SAMPLES_CONFIG), store="s3://obscast-test/run", epochs=PIPELINE_EPOCHS)
    assert result["scores"] == "s3://obscast-test/run/scores/obscast-era5/v0001/scores.zarr"
    store = Store("s3://obscast-test/run", {"endpoint_url": s3})
    for name in ("synop", "temp", "aircraft"):
        assert len(ObsTable(store, f"obs/{name}.zarr").read()) == len(ObsTable(Store(str(local_store)), f"obs/{name}.zarr").read())
    remote = store.open_dataset("scores/obscast-era5/v0001/scores.zarr").load()
    here = xr.open_zarr(Path(local["scores"]), consolidated=False).load()
    np.testing.assert_allclose(remote["rmse"].values, here["rmse"].values, rtol=1e-4)
    assert store.read_bytes("scores/obscast-era5/v0001/rmse.png")[:4] == b"\x89PNG"
    meta = store.read_json("models/obscast-era5/v0001/metadata.json")
    assert s3 in json.dumps(meta)  # the endpoint is recorded ...
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in json.dumps(meta)  # ... the secret never


def test_raw_files_on_s3_ingest(s3, prefect_api, tmp_path, monkeypatch):
    """Raw BUFR uploaded to S3 ingests: an ``s3://`` glob and a ``store:raw/...`` path of a store on S3,
    fetched through s3fs into a cache named by the object's ETag."""
    from obscast.components.obs.readers.access import s3_files
    from obscast.components.obs.readers.bufr import read_observations
    from obscast.flows.ingest import ingest_flow

    from tests.conftest import SAMPLES

    monkeypatch.setenv("OBSCAST_RAW_CACHE", str(tmp_path / "cache"))
    store = Store("s3://obscast-test/raw-ingest", {"endpoint_url": s3})
    store.fs.put(str(SAMPLES / "amv2_87.bufr"), "obscast-test/feed/amv/20121102.bufr")
    store.fs.put(str(SAMPLES / "amv2_87.bufr"), "obscast-test/raw-ingest/raw/amv/20121102.bufr")
    config = tmp_path / "s3.yaml"
    config.write_text(
        "store: s3://obscast-test/raw-ingest\n"
        "sources:\n"
        "  meteosat: {kind: amv, paths: ['s3://obscast-test/feed/amv/*.bufr']}\n"
        "  inside: {kind: amv, paths: ['store:raw/amv/*.bufr']}\n"
    )
    summary = ingest_flow(config_path=str(config))
    for name, kind, sample in (("meteosat", "amv", "amv2_87.bufr"), ("inside", "amv", "amv2_87.bufr")):
        stored = len(ObsTable(store, f"obs/{name}.zarr").read()) + len(ObsTable(store, f"quarantine/{name}.zarr").read())
        assert stored == summary["sources"][name]["qc"]["total"] == len(read_observations(kind, SAMPLES / sample)), name
    # an unchanged object is not fetched again; a changed one (new ETag) is
    first = s3_files("s3://obscast-test/feed/amv/*.bufr", store)
    mtime = Path(first[0]).stat().st_mtime_ns
    assert s3_files("s3://obscast-test/feed/amv/*.bufr", store) == first and Path(first[0]).stat().st_mtime_ns == mtime
    store.fs.pipe("obscast-test/feed/amv/20121102.bufr", (SAMPLES / "amv2_87.bufr").read_bytes()[:30000])
    second = s3_files("s3://obscast-test/feed/amv/*.bufr", store)
    assert second != first and Path(second[0]).stat().st_size == 30000
