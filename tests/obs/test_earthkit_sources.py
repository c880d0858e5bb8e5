"""earthkit-data as the access layer: a source's files fetched from an earthkit-data `url` source
served on loopback by a real HTTP server (python's http.server in a thread)."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest

from obscast.components.config import load_config
from obscast.components.errors import InputError
from obscast.components.obs.readers.access import earthkit_paths, read_gridded_file, read_observation_file, source_paths
from obscast.components.obs.readers.amv import read_amv
from obscast.components.obs.readers.grib import read_grib
from obscast.components.store.storage import Store

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"


@pytest.fixture(scope="module")
def http_samples():
    """``http://127.0.0.1:<port>/`` serving data/samples; yields the base URL and the request log."""
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, fmt, *args):  # keep the test output quiet, record the paths
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(SAMPLES)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


CONFIG = """
store: {store}
sources:
  meteosat: {{kind: amv, earthkit: {{source: url, args: ["{base}/amv2_87.bufr"]}}}}
gridded:
  era5: {{earthkit: {{source: url, args: ["{base}/era5-levels-members.grib"]}}}}
"""


def test_url_source_is_read_like_a_local_file(http_samples, tmp_path):
    base, requests = http_samples
    file = tmp_path / "remote.yaml"
    file.write_text(CONFIG.format(store=tmp_path / "store", base=base))
    config = load_config(file)
    store = Store(str(tmp_path / "store"))
    paths = source_paths(config.sources["meteosat"], store)
    assert len(paths) == 1 and Path(paths[0]).read_bytes() == (SAMPLES / "amv2_87.bufr").read_bytes()
    assert "/amv2_87.bufr" in requests  # really fetched over HTTP
    table = read_observation_file("amv", paths[0])
    assert table.equals(read_amv(SAMPLES / "amv2_87.bufr"))
    grid = read_gridded_file(source_paths(config.gridded["era5"], store)[0], config.gridded["era5"].netcdf)
    assert grid.equals(read_grib(SAMPLES / "era5-levels-members.grib"))


def test_url_source_failure_is_a_one_line_error(http_samples, tmp_path):
    base, _ = http_samples
    file = tmp_path / "missing.yaml"
    file.write_text(CONFIG.format(store=tmp_path, base=base).replace("amv2_87.bufr", "absent.bufr"))
    config = load_config(file)
    with pytest.raises(InputError) as err:
        earthkit_paths(config.sources["meteosat"].earthkit)
    assert "earthkit url" in str(err.value) and "absent.bufr" in str(err.value) and "\n" not in str(err.value)


def test_a_source_needs_paths_or_earthkit(tmp_path):
    from obscast.components.errors import ConfigError

    file = tmp_path / "none.yaml"
    file.write_text("sources:\n  s: {kind: synop}\n")
    with pytest.raises(ConfigError, match="paths' or an 'earthkit"):
        load_config(file)
    file.write_text("sources:\n  s: {kind: synop, earthkit: {source: ftp}}\n")
    with pytest.raises(ConfigError, match="earthkit.source"):
        load_config(file)
