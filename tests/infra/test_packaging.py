"""The package installs anywhere: a non-editable ``pip install`` into a fresh virtual environment
outside the repository carries the embedded configurations, ``prefect.yaml`` and the network
files, finds them from the installed package, knows its version, and runs the embedded default.

The fresh environment gets obscast only; its dependencies (torch, Prefect, JAX, ...) are those of
the test's own environment, reached through a path entry (a ``.pth`` file: only the directory is
added, its own ``.pth`` files, such as the editable install's, are not run), so nothing is
downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def copy_sources(dest: Path) -> Path:
    """Copy what the build reads (pyproject.toml, the readme, the license files and every folder
    of ``tool.setuptools.package-dir``) to ``dest``, so the build leaves nothing in the checkout."""
    project = PYPROJECT["project"]
    dest.mkdir(parents=True)
    for name in ["pyproject.toml", project["readme"], *project["license-files"]]:
        shutil.copy2(REPO / name, dest / name)
    for folder in PYPROJECT["tool"]["setuptools"]["package-dir"].values():
        shutil.copytree(REPO / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> dict[str, Path]:
    """obscast installed with ``pip install --no-deps <sources>`` (not editable) into a fresh
    virtual environment in a temporary directory; returns its paths."""
    root = tmp_path_factory.mktemp("install")
    sources = copy_sources(root / "src")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "_obscast_test_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-build-isolation",
                          "--no-index", "--no-cache-dir", str(sources)], capture_output=True, text=True, cwd=root)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    work = root / "work"  # the working directory of the commands below: neither the repository nor the sources
    work.mkdir()
    return {"root": root, "venv": venv, "python": python, "purelib": purelib, "work": work}


def env_for(installed: dict[str, Path], **extra: str) -> dict[str, str]:
    """The environment of a command run in the fresh installation: no PREFECT_API_URL (an
    ephemeral Prefect server), its own PREFECT_HOME, no PYTHONPATH leading back to the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OBSCAST_")) and k != "PYTHONPATH"}
    env.update(PREFECT_HOME=str(installed["root"] / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PATH=f"{installed['venv'] / 'bin'}:{env['PATH']}", OMP_NUM_THREADS="1", **extra)
    return env


def test_wheel_carries_package_data_license_and_version(installed):
    """configs/*.yaml, infra/prefect.yaml and data/networks/ are installed as package data; the
    metadata has the SPDX license expression and the LICENSE file; ``obscast --version`` prints
    the version of the package metadata from any directory."""
    pkg = installed["purelib"] / "obscast"
    data = [*(REPO / "configs").glob("*.yaml"), REPO / "infra" / "prefect.yaml", *(REPO / "data" / "networks").iterdir()]
    assert len(data) >= 7
    for path in data:
        name = path.relative_to(REPO)
        assert (pkg / name).is_file(), f"{name} missing from the installed package"
        assert (pkg / name).read_bytes() == path.read_bytes()
    for package, folder in PYPROJECT["tool"]["setuptools"]["package-dir"].items():  # no module left out (a new subpackage
        for source in (REPO / folder).rglob("*.py"):                                # missing from `packages`)
            if "__pycache__" not in source.parts:
                installed_file = pkg / package.removeprefix("obscast.").replace(".", "/") / source.relative_to(REPO / folder)
                assert installed_file.is_file(), f"{source.relative_to(REPO)} is not in the wheel: add its package to pyproject.toml"
    version = PYPROJECT["project"]["version"]
    dist = installed["purelib"] / f"obscast-{version}.dist-info"
    metadata = (dist / "METADATA").read_text()
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata
    assert (dist / "licenses" / "LICENSE").read_text() == (REPO / "LICENSE").read_text()
    assert not (dist / "direct_url.json").is_file() or '"editable": true' not in (dist / "direct_url.json").read_text()

    out = subprocess.run([str(installed["venv"] / "bin" / "obscast"), "--version"], capture_output=True, text=True,
                         cwd=installed["work"], env=env_for(installed), timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"obscast {version}"


PROBE = r"""
import json
from pathlib import Path

import obscast.flows.cli
from obscast.components.config import DEFAULT_CONFIG, load_config
from obscast.components.osse.networks import load_networks
from obscast.components.store import registry
from obscast.infra.deploy import load_flow, read_deployments

config = load_config()  # the embedded default
networks = load_networks(config.osse.networks)
print(json.dumps({
    "cli": obscast.flows.cli.__file__, "default": str(DEFAULT_CONFIG), "networks_dir": config.osse.networks,
    "networks": {k: len(v) for k, v in networks.items()}, "store": config.store,
    "deployments": [str(s.source_file) for s in read_deployments()],
    "flow_modules": sorted({load_flow(s).fn.__module__ for s in read_deployments()}),
    "package_version": registry.package_version(), "git_commit": registry.git_commit(), "code_version": registry.code_version(),
}))
"""


def test_installed_package_finds_its_files(installed):
    """From another directory, the installed code (not the checkout's) loads the embedded default,
    whose network files resolve inside the installed package; the deployments' flow files are
    found; the model card's versions come from the package metadata, with no git commit."""
    out = subprocess.run([str(installed["python"]), "-c", PROBE], capture_output=True, text=True, cwd=installed["work"],
                         env=env_for(installed), timeout=300)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    pkg = (installed["purelib"] / "obscast").resolve()
    for key in ("cli", "default", "networks_dir"):
        assert Path(found[key]).resolve().is_relative_to(pkg), (key, found[key])
    assert set(found["networks"]) == {"synop", "temp", "aircraft", "satellite"} and min(found["networks"].values()) > 0
    assert found["store"] == str(installed["work"] / "store")  # relative to where obscast runs
    assert found["deployments"] and all(Path(f).is_file() and Path(f).resolve().is_relative_to(pkg) for f in found["deployments"])
    assert found["flow_modules"] and all(m.startswith("obscast.flows.") for m in found["flow_modules"])  # what `obscast serve` imports
    version = PYPROJECT["project"]["version"]
    assert found == {**found, "package_version": version, "git_commit": None, "code_version": version}


def test_installed_obscast_simulates_the_embedded_default(installed):
    """``obscast simulate`` on the embedded default (made tiny through OBSCAST_* variables: a
    T21 nature run of 1 + 2 days) runs from the installed package with an ephemeral Prefect
    server, and writes the simulated BUFR into the store under the working directory."""
    split = {"by": "period", "train": {"start": "2000-01-01T00:00:00", "end": "2000-01-01T18:00:00"},
             "validation": {"start": "2000-01-02T00:00:00", "end": "2000-01-02T06:00:00"},
             "test": {"start": "2000-01-02T12:00:00", "end": "2000-01-02T18:00:00"}}
    env = env_for(installed, OBSCAST_OSSE__NATURE__TRUNCATION="T21", OBSCAST_OSSE__NATURE__SPINUP_DAYS="1",
                  OBSCAST_OSSE__NATURE__LENGTH_DAYS="2", OBSCAST_EXPERIMENT__SPLIT=json.dumps(split))
    out = subprocess.run([str(installed["venv"] / "bin" / "obscast"), "simulate", "--json"], capture_output=True, text=True,
                         cwd=installed["work"], env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    raw = installed["work"] / "store" / "raw" / "osse"
    for kind in ("synop", "temp", "aircraft", "satellite"):
        files = sorted((raw / kind).glob("*.bufr"))
        assert files and all(f.stat().st_size > 0 for f in files), kind
