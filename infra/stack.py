"""The local stack: a Prefect server (SQLite) and a SeaweedFS S3 server, both on 127.0.0.1.

::

    python -m obscast.infra.stack start     # starts both in the background, creates the bucket, prints the exports
    eval "$(python -m obscast.infra.stack env)"
    python -m obscast.infra.stack status
    python -m obscast.infra.stack stop      # SIGTERM to the Prefect server, SIGKILL to weed

State (the Prefect database and UI build, the S3 data, logs and ``stack.json`` with the process
ids) lives under ``.stack/`` at the repository root, so runs, artifacts and stored objects survive
a stop and start. The S3 keys are fixed local development keys (:data:`obscast.infra.s3_server.DEV_KEY`),
never credentials of a real account.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from obscast.infra.prefect_server import start_prefect_server, stop_process_group, temporary_env
from obscast.infra.s3_server import DEV_KEY, DEV_SECRET, start_s3_server

DEFAULT_DIR = Path(__file__).resolve().parents[1] / ".stack"
STATE = "stack.json"


def _alive(pid: int, word: str) -> bool:
    """Whether ``pid`` runs and its command line contains ``word`` (guards against reused pids)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return word in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z"


def read_state(stack_dir: Path = DEFAULT_DIR) -> dict[str, Any] | None:
    """The state of a started stack (``stack.json``), or None if there is none."""
    path = stack_dir / STATE
    return json.loads(path.read_text()) if path.is_file() else None


def environment(state: dict[str, Any]) -> dict[str, str]:
    """The variables that point Prefect clients and obscast at the stack."""
    return {
        "PREFECT_API_URL": state["prefect"]["url"],
        "OBSCAST_STORE": f"s3://{state['bucket']}/obscast",
        "OBSCAST_STORAGE_OPTIONS": json.dumps({"endpoint_url": state["s3"]["endpoint"]}),
        "AWS_ACCESS_KEY_ID": DEV_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET,
    }


def exports(state: dict[str, Any]) -> str:
    """``export NAME='value'`` lines for a POSIX shell."""
    return "\n".join(f"export {k}='{v}'" for k, v in environment(state).items())


def status(stack_dir: Path = DEFAULT_DIR) -> dict[str, bool]:
    """Which services of the stack are up: ``{"prefect": bool, "s3": bool}`` (both False when not started)."""
    state = read_state(stack_dir)
    if state is None:
        return {"prefect": False, "s3": False}
    up = {"prefect": _alive(state["prefect"]["pid"], "prefect"), "s3": _alive(state["s3"]["pid"], "weed")}
    if up["prefect"]:
        try:
            urllib.request.urlopen(state["prefect"]["url"] + "/health", timeout=5)
        except OSError:
            up["prefect"] = False
    if up["s3"]:
        try:
            urllib.request.urlopen(state["s3"]["endpoint"], timeout=5)
        except urllib.error.HTTPError:
            pass  # 403 for an anonymous request: it answers
        except OSError:
            up["s3"] = False
    return up


def start(stack_dir: Path = DEFAULT_DIR, prefect_port: int = 4200, s3_port: int = 8333, bucket: str = "obscast") -> dict[str, Any]:
    """Start the Prefect server and SeaweedFS in the background and create the bucket.

    Returns the state (also written to ``<stack_dir>/stack.json``). A stack that is already up is
    left as it is and its state returned.

    Raises
    ------
    RuntimeError
        If a service does not come up (its log is quoted), or a half-running stack is found
        (stop it first). The services started by this call are stopped again.
    """
    from obscast.components.store.storage import Store

    state = read_state(stack_dir)
    if state is not None:
        up = status(stack_dir)
        if all(up.values()):
            return state
        if any(up.values()):
            raise RuntimeError(f"{stack_dir}: the stack is half running ({up}): run `python -m obscast.infra.stack stop` first")
    stack_dir.mkdir(parents=True, exist_ok=True)
    prefect_proc, url = start_prefect_server(stack_dir / "prefect", prefect_port)
    try:
        with temporary_env(AWS_ACCESS_KEY_ID=DEV_KEY, AWS_SECRET_ACCESS_KEY=DEV_SECRET):
            s3_proc, endpoint = start_s3_server(stack_dir / "seaweedfs", s3_port)
            try:
                fs = Store(f"s3://{bucket}", {"endpoint_url": endpoint, "key": DEV_KEY, "secret": DEV_SECRET}).fs
                if not fs.exists(bucket):
                    fs.mkdir(bucket)
            except BaseException:
                stop_process_group(s3_proc.pid, signal.SIGKILL)
                raise
    except BaseException:
        stop_process_group(prefect_proc.pid, signal.SIGTERM)
        raise
    state = {
        "prefect": {"pid": prefect_proc.pid, "url": url, "ui": url.removesuffix("/api"), "home": str(stack_dir / "prefect")},
        "s3": {"pid": s3_proc.pid, "endpoint": endpoint, "dir": str(stack_dir / "seaweedfs")},
        "bucket": bucket,
    }
    (stack_dir / STATE).write_text(json.dumps(state, indent=2))
    return state


def stop(stack_dir: Path = DEFAULT_DIR) -> bool:
    """Stop the stack: SIGKILL to weed (SIGTERM takes about 30 s), SIGTERM to the Prefect server
    (SIGKILL after 15 s). The data stay under ``stack_dir``. Returns False if none was started."""
    state = read_state(stack_dir)
    if state is None:
        return False
    if _alive(state["s3"]["pid"], "weed"):
        stop_process_group(state["s3"]["pid"], signal.SIGKILL)
    if _alive(state["prefect"]["pid"], "prefect"):
        stop_process_group(state["prefect"]["pid"], signal.SIGTERM, timeout=15)
    (stack_dir / STATE).unlink()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m obscast.infra.stack", description="Start, inspect or stop the local stack "
                                     "(Prefect server on SQLite and SeaweedFS S3, both on 127.0.0.1).")
    parser.add_argument("action", choices=["start", "stop", "status", "env"])
    parser.add_argument("--dir", default=str(DEFAULT_DIR), help="state directory (default: .stack/ at the repository root)")
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--s3-port", type=int, default=8333)
    parser.add_argument("--bucket", default="obscast")
    args = parser.parse_args(argv)
    stack_dir = Path(args.dir).resolve()
    if args.action == "start":
        if read_state(stack_dir) is not None and all(status(stack_dir).values()):
            print("already running")
        try:
            state = start(stack_dir, args.prefect_port, args.s3_port, args.bucket)
        except (RuntimeError, FileNotFoundError) as exc:
            print(f"infra.stack: error: {exc}", file=sys.stderr)
            return 1
        print(f"Prefect server and UI: {state['prefect']['ui']}  (pid {state['prefect']['pid']})\n"
              f"S3 (SeaweedFS): {state['s3']['endpoint']}, bucket {state['bucket']}  (pid {state['s3']['pid']})\n"
              f"State and logs in {stack_dir}. Point obscast and Prefect at the stack with (local development keys):\n")
        print(exports(state))
        return 0
    if args.action == "stop":
        print("stopped" if stop(stack_dir) else f"no stack started in {stack_dir}")
        return 0
    state = read_state(stack_dir)
    if args.action == "env":
        if state is None:
            print(f"infra.stack: error: no stack started in {stack_dir} (run `python -m obscast.infra.stack start`)", file=sys.stderr)
            return 1
        print(exports(state))
        return 0
    up = status(stack_dir)
    if state is None:
        print(f"not started ({stack_dir})")
    else:
        print(f"prefect {'up' if up['prefect'] else 'DOWN'}  {state['prefect']['ui']}  pid {state['prefect']['pid']}\n"
              f"s3      {'up' if up['s3'] else 'DOWN'}  {state['s3']['endpoint']}  bucket {state['bucket']}  pid {state['s3']['pid']}")
    return 0 if all(up.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
