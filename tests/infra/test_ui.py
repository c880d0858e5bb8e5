"""The Prefect UI shows a verify run's scores: headless Chromium (driven over the DevTools
protocol) opens the run's page on the real server, goes to its Artifacts tab and the score
artifact; the screenshots are saved in test-artifacts/ and the rendered text is checked. It also
shows the training's progress artifact (complete) on the train run's page and the scores as a
table artifact."""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000", "--remote-debugging-port=0"]


class Browser:
    """Headless Chromium with one page, driven over the Chrome DevTools Protocol (websockets)."""

    def __init__(self, binary: str):
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-"))
        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.ids = itertools.count(1)
        port_file = self.profile / "DevToolsActivePort"  # Chromium writes its debugging port here
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"Chromium did not start (exit status {self.proc.poll()})")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.load(r) if t["type"] == "page")
        from websockets.sync.client import connect

        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None)

    def call(self, method: str, **params):
        """Send one DevTools command and return its result (events in between are skipped)."""
        n = next(self.ids)
        self.ws.send(json.dumps({"id": n, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == n:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def wait_for(self, check, what: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"the page never showed {what}; it shows:\n{self.text()[:3000]}")

    def wait_for_text(self, *words: str, timeout: float = 60) -> str:
        return self.wait_for(lambda: (t := self.text()) and all(w in t for w in words) and t, f"{words}", timeout)

    def click_text(self, selector: str, text: str) -> None:
        clicked = self.js(f"(() => {{ const el = [...document.querySelectorAll({json.dumps(selector)})]"
                          f".find(e => e.textContent.trim() === {json.dumps(text)}); if (!el) return false; el.click(); return true; }})()")
        assert clicked, f"no {selector} element with the text {text!r}"

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.ws.close()
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def test_verify_run_page_shows_the_scores(pipeline_run, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    binary = shutil.which("chromium")
    assert binary, "chromium not found: run `bash infra/setup.sh` as root (it installs Debian's chromium)"
    store, result = pipeline_run
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["verification-scores"])))
        ours = [a for a in artifacts if result["plot"] in a.data]  # this store's verify run (other tests publish too)
        assert ours, "the pipeline's verify run published no score artifact"
        artifact = ours[-1]
        run = client.read_flow_run(artifact.flow_run_id)
    assert run.flow_id and run.state.is_completed()
    # A value of the table as the UI formats it (markdown cell text), e.g. geopotential_500hPa at 12 h.
    row = next(line for line in result["markdown"].splitlines() if line.startswith("| geopotential_500hPa [m2 s-2] | 12 h |"))
    model_rmse = row.strip("|").split("|")[2].strip()

    browser = Browser(binary)
    try:
        browser.call("Page.enable")
        browser.call("Page.navigate", url=f"{prefect_api.removesuffix('/api')}/runs/flow-run/{run.id}")
        browser.wait_for_text(run.name, "Completed", "Artifacts")
        browser.click_text("li.p-tab", "Artifacts")
        browser.wait_for_text("verification-scores", "RMSE and bias vs lead time")
        browser.screenshot(ARTIFACTS / "ui-verify-run-artifacts-tab.png")
        # Open the score artifact from its card, as a user would.
        browser.click_text(".artifact-card__title", "verification-scores")
        # The side panel names the verify run the artifact belongs to.
        text = browser.wait_for_text("latitude-weighted RMSE", "persistence", "climatology", "geopotential_500hPa", run.name)
        plot_width = browser.wait_for(
            lambda: browser.js("(() => { const i = document.querySelector('img[src^=\"data:image/png\"]');"
                               " return i && i.complete ? i.naturalWidth : 0; })()"), "the RMSE plot")
        browser.screenshot(ARTIFACTS / "ui-verify-scores.png")
        url = browser.js("location.pathname")
        browser.js("document.querySelector('img[src^=\"data:image/png\"]').scrollIntoView({block: 'center'})")
        time.sleep(0.5)
        browser.screenshot(ARTIFACTS / "ui-verify-scores-plot.png")
    finally:
        browser.close()
    assert url == f"/artifacts/artifact/{artifact.id}"
    assert "obscast-era5 v0001" in text and model_rmse in text
    assert plot_width >= 500  # the embedded PNG decoded and laid out


def _pipeline_runs(client, result) -> tuple:
    """The verify flow run of this session's pipeline (its score artifact names this store's plot)
    and the id of the pipeline flow run that holds it as a subflow."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    scores = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["verification-scores"])))
    # Other tests (deployments) verify the same store again in runs of their own; only the
    # pipeline's verify run is a subflow, with a parent task run.
    runs = [client.read_flow_run(a.flow_run_id) for a in scores if result["plot"] in a.data]
    verify = [run for run in runs if run.parent_task_run_id is not None]
    assert verify, f"no verify subflow run among the {len(runs)} runs that published this store's scores"
    return verify[-1], client.read_task_run(verify[-1].parent_task_run_id).flow_run_id


def test_run_pages_show_progress_and_table_artifacts(pipeline_run, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    binary = shutil.which("chromium")
    assert binary, "chromium not found: run `bash infra/setup.sh` as root (it installs Debian's chromium)"
    store, result = pipeline_run
    with get_client(sync_client=True) as client:
        verify, pipeline_id = _pipeline_runs(client, result)
        table = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["verification-scores-table"]),
                                                                     flow_run_id=ArtifactFilterFlowRunId(any_=[verify.id])))
        assert len(table) == 1, "the verify run published no table artifact"
        table = table[0]
        # The training's progress artifact: the one of this pipeline's train subflow.
        bars = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["train-obscast-era5-progress"])))
        # Other tests train in runs of their own (retrain, deployments): only subflows have a parent task run.
        parents = {a.id: client.read_flow_run(a.flow_run_id).parent_task_run_id for a in bars}
        ours = [a for a in bars if parents[a.id] is not None and client.read_task_run(parents[a.id]).flow_run_id == pipeline_id]
        assert len(ours) == 1, f"expected one progress artifact of the pipeline's training, found {len(ours)}"
        bar = ours[0]
        train = client.read_flow_run(bar.flow_run_id)
    assert bar.type == "progress" and bar.data == 100.0  # every epoch done
    assert table.type == "table"
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    row = next(r for r in rows if r["channel"] == "geopotential_500hPa [m2 s-2]" and r["lead_time"] == "12 h")
    model_rmse = float(row["model"])
    shown = str(int(model_rmse)) if model_rmse.is_integer() else repr(model_rmse)  # as JavaScript prints the number

    browser = Browser(binary)
    try:
        browser.call("Page.enable")
        base = prefect_api.removesuffix("/api")
        browser.call("Page.navigate", url=f"{base}/runs/flow-run/{train.id}")
        browser.wait_for_text(train.name, "Completed", "Artifacts")
        browser.click_text("li.p-tab", "Artifacts")
        # The card names the artifact and shows its description: the last epoch.
        card_text = browser.wait_for_text("PROGRESS", "train-obscast-era5-progress", "Training obscast-era5: epoch")
        browser.screenshot(ARTIFACTS / "ui-train-run-progress.png")
        browser.call("Page.navigate", url=f"{base}/artifacts/artifact/{bar.id}")
        progress_text = browser.wait_for_text("train-obscast-era5-progress", "Progress: 100%", train.name)  # side panel: its run
        browser.screenshot(ARTIFACTS / "ui-train-progress-artifact.png")
        browser.call("Page.navigate", url=f"{base}/artifacts/artifact/{table.id}")
        table_text = browser.wait_for_text("verification-scores-table", "lead_time", "persistence", "climatology",
                                           "geopotential_500hPa [m2 s-2]", shown, verify.name)
        browser.screenshot(ARTIFACTS / "ui-verify-scores-table.png")
    finally:
        browser.close()
    epochs = re.search(r"Training obscast-era5: epoch (\d+) of (\d+)", card_text)
    assert epochs and epochs.group(1) == epochs.group(2), card_text[:2000]  # the last update: every epoch done
    assert train.name in progress_text and verify.name in table_text  # each artifact page names its run
