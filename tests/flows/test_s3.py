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

    from tests.conftest import SAMPLES_CONFIG

    local_store, local = pipeline_run
    result = pipeline_flow(config_path=str(SAMPLES_CONFIG), store="s3://obscast-test/run", epochs=8)
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
