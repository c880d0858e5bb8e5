"""The stack with authentication (``python -m obscast.infra.stack start --auth``, implied by a
non-loopback ``--host``): the Prefect API refuses calls without the basic-auth string (401),
SeaweedFS refuses a wrong key, an anonymous request and any other bucket (403), and a served
deployment with the stack's credentials still runs and reads and writes the bucket.

The stack binds 127.0.0.1 here (auth switched on explicitly), so nothing is exposed by the test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from obscast.infra.prefect_server import free_port, stop_process_group

REPO = Path(__file__).resolve().parents[2]


#: A flow that writes to the stack's store (``OBSCAST_STORE``, S3) and reads it back; served from a
#: file (Prefect is imported only inside tests, after the servers' variables are set).
FLOW_SOURCE = """\
import json
import os

from prefect import flow


@flow(name="auth-roundtrip")
def s3_roundtrip(text: str) -> str:
    from obscast.components.store.storage import Store

    store = Store(os.environ["OBSCAST_STORE"], json.loads(os.environ["OBSCAST_STORAGE_OPTIONS"]))
    store.write_bytes(text.encode(), "auth-check", "roundtrip.txt")
    return store.read_bytes("auth-check", "roundtrip.txt").decode()


if __name__ == "__main__":
    s3_roundtrip.serve(name="auth-check")
"""


def _stack(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "obscast.infra.stack", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def stack():
    """A stack started with ``--auth`` on 127.0.0.1 (SQLite). Yields ``(state, exports)``:
    ``exports`` are the variables ``stack env`` prints."""
    from obscast.infra.stack import environment, read_state

    stack_dir = Path(tempfile.mkdtemp(prefix="obscast-auth-stack-"))
    args = ["--dir", str(stack_dir), "--prefect-port", str(free_port()), "--s3-port", str(free_port())]
    try:
        auth_string = "tester:" + os.urandom(12).hex()  # from the environment; the S3 keys are generated
        started = _stack("start", *args, "--auth", env={"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OBSCAST_STACK_AUTH_STRING": auth_string})
        assert started.returncode == 0, started.stdout + started.stderr
        state = read_state(stack_dir)
        assert state["auth"] is True
        creds_file = Path(state["credentials"])
        assert creds_file.stat().st_mode & 0o777 == 0o600  # written for the user only
        secrets = json.loads(creds_file.read_text())
        assert secrets["s3_secret"] not in started.stdout and secrets["prefect_auth_string"] not in started.stdout  # never printed by start
        printed = _stack("env", "--dir", str(stack_dir))
        exports = dict(line.removeprefix("export ").split("=", 1) for line in printed.stdout.splitlines())
        exports = {k: v.strip("'") for k, v in exports.items()}
        assert exports == environment(state)
        assert exports["PREFECT_API_AUTH_STRING"] == auth_string and exports["AWS_ACCESS_KEY_ID"] == secrets["s3_key"]
        yield state, exports
    finally:
        _stack("stop", "--dir", str(stack_dir))
        shutil.rmtree(stack_dir, ignore_errors=True)


def _api(url: str, auth: str | None, path: str = "/flows/filter") -> int:
    request = urllib.request.Request(url + path, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_prefect_api_requires_the_auth_string(stack):
    state, env = stack
    url = env["PREFECT_API_URL"]
    assert _api(url, None) == 401
    assert _api(url, "obscast:wrong-password") == 401
    assert _api(url, env["PREFECT_API_AUTH_STRING"]) == 200
    with urllib.request.urlopen(url + "/health", timeout=10) as r:  # probes stay open
        assert r.status == 200


def _s3(env: dict, key: str, secret: str):
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(
        "s3", endpoint_url=json.loads(env["OBSCAST_STORAGE_OPTIONS"])["endpoint_url"], aws_access_key_id=key,
        aws_secret_access_key=secret, region_name="us-east-1", config=Config(retries={"max_attempts": 1}))


def _status(call) -> int:
    from botocore.exceptions import ClientError

    try:
        response = call()
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"]
    return response["ResponseMetadata"]["HTTPStatusCode"]


def test_s3_allows_the_identity_on_its_bucket_only(stack):
    state, env = stack
    bucket = state["bucket"]
    creds = json.loads(Path(state["credentials"]).read_text())
    user = _s3(env, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    admin = _s3(env, creds["s3_admin_key"], creds["s3_admin_secret"])
    # The identity reads, writes and lists its bucket.
    assert _status(lambda: user.put_object(Bucket=bucket, Key="obscast/hello.txt", Body=b"hello")) == 200
    assert user.get_object(Bucket=bucket, Key="obscast/hello.txt")["Body"].read() == b"hello"
    assert _status(lambda: user.list_objects_v2(Bucket=bucket, Prefix="obscast/")) == 200
    # Another bucket, with an object in it (made with the stack's admin identity), is closed to it.
    assert _status(lambda: admin.create_bucket(Bucket="someone-else")) == 200
    assert _status(lambda: admin.put_object(Bucket="someone-else", Key="secret.txt", Body=b"not yours")) == 200
    assert _status(lambda: user.get_object(Bucket="someone-else", Key="secret.txt")) == 403
    assert _status(lambda: user.list_objects_v2(Bucket="someone-else")) == 403
    assert _status(lambda: user.put_object(Bucket="someone-else", Key="x.txt", Body=b"x")) == 403
    assert _status(lambda: user.create_bucket(Bucket="my-own")) == 403
    # A wrong secret, an unknown key, and no credentials at all are refused.
    assert _status(lambda: _s3(env, env["AWS_ACCESS_KEY_ID"], "wrong-secret").get_object(Bucket=bucket, Key="obscast/hello.txt")) == 403
    assert _status(lambda: _s3(env, "nobody", "nothing").get_object(Bucket=bucket, Key="obscast/hello.txt")) == 403
    endpoint = json.loads(env["OBSCAST_STORAGE_OPTIONS"])["endpoint_url"]
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{endpoint}/{bucket}/obscast/hello.txt", timeout=10)
    assert anonymous.value.code == 403


@pytest.mark.slow
def test_served_deployment_runs_with_the_credentials(stack, tmp_path):
    """A deployment served with the exported credentials runs: its flow run is created and
    followed through the authenticated API and reads and writes the bucket with the S3 identity."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    state, env = stack
    log = tmp_path / "serve.log"
    serve_env = {**os.environ, **env, "PREFECT_HOME": str(tmp_path / "home"), "PREFECT_RUNNER_POLL_FREQUENCY": "2",
                 "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    (tmp_path / "auth_flow.py").write_text(FLOW_SOURCE)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "auth_flow.py"], cwd=tmp_path, env=serve_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        with temporary_settings(updates={PREFECT_API_URL: env["PREFECT_API_URL"], PREFECT_API_AUTH_STRING: env["PREFECT_API_AUTH_STRING"]}):
            with get_client(sync_client=True) as client:
                deadline = time.monotonic() + 120
                while True:
                    try:
                        client.read_deployment_by_name("auth-roundtrip/auth-check")
                        break
                    except Exception:
                        assert proc.poll() is None and time.monotonic() < deadline, f"serve did not register the deployment:\n{log.read_text()[-3000:]}"
                        time.sleep(1)
                run = run_deployment("auth-roundtrip/auth-check", parameters={"text": "with credentials"}, timeout=180, poll_interval=2)
                assert run.state.is_completed(), f"{run.state}\n{log.read_text()[-3000:]}"
    finally:
        stop_process_group(proc.pid, signal.SIGINT, timeout=30)
    # The flow run wrote the object with the identity: it is in the bucket.
    user = _s3(env, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
    key = env["OBSCAST_STORE"].removeprefix(f"s3://{state['bucket']}/") + "/auth-check/roundtrip.txt"
    assert user.get_object(Bucket=state["bucket"], Key=key)["Body"].read() == b"with credentials"


def test_serving_beyond_loopback_without_auth_is_refused(tmp_path):
    """``--host 0.0.0.0 --no-auth`` is refused before anything starts."""
    result = _stack("start", "--dir", str(tmp_path / "stack"), "--host", "0.0.0.0", "--no-auth")
    assert result.returncode == 1
    assert "requires authentication" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "stack" / "stack.json").exists()
