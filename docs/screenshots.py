"""Screenshots of what a user sees, taken from a real served run, so the docs never drift from it.

Starts `autobuild serve` on loopback (free ports, its own home), triggers a tiny quickstart run
with `autobuild trigger --wait`, then headless Chromium writes into ``--out`` (default docs/img):
the MLflow runs view, the search run's charts, the Prefect flow run with its graph, and the
report. Everything it started is stopped at the end (`autobuild serve --stop`).

    python docs/screenshots.py [--out docs/img]

tests/test_served_outputs.py runs it into a temporary folder (skipped where Chromium is missing).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
# A tiny run of the quickstart deployment: NAS-Bench-Graph lookups, a few ranker epochs.
TINY_PARAMS = ["config.seeds.n=40", "config.train.epochs=20", "config.prune.k=2", "config.search.budget=46",
               "config.search.method=tpe", "config.winners.top=2", "config.name=screenshots"]
SHOTS = {  # file name -> window size
    "mlflow_runs.png": (1400, 800),
    "mlflow_run_charts.png": (1400, 900),
    "prefect_run_graph.png": (1400, 900),
    "report.png": (1280, 2400),
}


def chromium() -> str | None:
    """The headless browser's path, or None when none is installed."""
    for name in CHROMIUM:
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_json(url: str, body: dict | None = None, timeout: float = 15) -> object:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="GET" if body is None else "POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - loopback servers started here
        return json.loads(r.read() or b"null")


class Served:
    """`autobuild serve` in ``project`` (a directory holding prefect.yaml), stopped on exit."""

    def __init__(self, project: Path, home: Path, timeout: float = 300):
        self.project, self.home, self.timeout = Path(project), Path(home), timeout
        self.prefect_port, self.mlflow_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.prefect_port}/api"
        self.ui = f"http://127.0.0.1:{self.prefect_port}"
        self.mlflow = f"http://127.0.0.1:{self.mlflow_port}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "AUTOBUILD_TRACKING_URI")}
        self.env.update(MPLBACKEND="Agg", PYTHONPATH=str(self.project))
        self.started = False

    def cli(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "autobuild_cli.main", *args], cwd=self.project, env=self.env,
                              capture_output=True, text=True, timeout=timeout or self.timeout)

    def __enter__(self) -> "Served":
        self.started = True
        r = self.cli("serve", "--prefect-port", str(self.prefect_port), "--mlflow-port", str(self.mlflow_port), "--home", str(self.home))
        if r.returncode != 0:
            self.__exit__()
            raise RuntimeError(f"`autobuild serve` failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        self.serve_output = r.stdout
        return self

    def __exit__(self, *exc) -> None:
        if self.started:
            self.cli("serve", "--stop", timeout=120)
            self.started = False

    def pids(self) -> list[int]:
        return list(json.loads((self.project / ".autobuild" / "serve.json").read_text())["pids"].values())

    def trigger(self, run_dir: Path, params: list[str] = TINY_PARAMS, timeout: float = 600) -> tuple[str, str]:
        """`autobuild trigger autobuild/quickstart --wait` (no environment set by hand); returns
        (flow run id, the command's output)."""
        args = ["trigger", "autobuild/quickstart", "--wait", "--timeout", str(timeout), "--param", f"run_dir={run_dir}"]
        for p in params:
            args += ["--param", p]
        r = self.cli(*args, timeout=timeout + 60)
        out = r.stdout + r.stderr
        m = re.search(r"flow run ([0-9a-f-]{36})", r.stdout)
        if r.returncode != 0 or m is None:
            raise RuntimeError(f"`autobuild trigger` failed ({r.returncode}):\n{out[-4000:]}")
        return m.group(1), r.stdout

    def markdown_artifacts(self, flow_run_id: str) -> dict[str, str]:
        """The flow run's Markdown artifacts, by key."""
        arts = _http_json(f"{self.api}/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
        return {a["key"]: a["data"] for a in arts if a.get("type") == "markdown" and a.get("key")}

    def urls(self, summary: dict, flow_run_id: str) -> dict[str, str]:
        """Browser addresses of each screenshot's page."""
        from mlflow import MlflowClient

        exp, parent = summary["mlflow_experiment_id"], summary["mlflow_run_id"]
        runs = MlflowClient(tracking_uri=self.mlflow).search_runs(  # the search: one point per evaluation
            [exp], filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.mlflow.runName LIKE 'search-%'")
        charts = runs[0].info.run_id if runs else parent
        return {
            "mlflow_runs.png": f"{self.mlflow}/#/experiments/{exp}/runs",
            "mlflow_run_charts.png": f"{self.mlflow}/#/experiments/{exp}/runs/{charts}/model-metrics",
            "prefect_run_graph.png": f"{self.ui}/runs/flow-run/{flow_run_id}",
            "report.png": Path(summary["report"]).resolve().as_uri(),
        }


def screenshot(browser: str, url: str, path: Path, size: tuple[int, int], wait_ms: int = 15000) -> Path:
    """One headless Chromium screenshot of ``url`` after ``wait_ms`` of (virtual) page time."""
    with tempfile.TemporaryDirectory(prefix="autobuild-chromium-") as profile:
        # the old headless mode: under the new one MLflow's metric charts never leave their spinners
        cmd = [browser, "--headless=old", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
               "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}", f"--window-size={size[0]},{size[1]}",
               f"--screenshot={path}", url]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if not path.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {url} (exit {r.returncode}): {r.stderr[-2000:]}")
    return path


def take(served: Served, run_dir: Path, flow_run_id: str, out: Path, browser: str) -> dict[str, Path]:
    """Every screenshot of one finished served run into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    summary = json.loads((run_dir / "summary.json").read_text())
    return {name: screenshot(browser, url, out / name, SHOTS[name]) for name, url in served.urls(summary, flow_run_id).items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "img"), help="folder of the PNGs")
    args = ap.parse_args(argv)
    browser = chromium()
    if browser is None:
        print("chromium is not installed (apt-get install -y chromium); no screenshots taken", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="autobuild-screenshots-") as tmp, Served(ROOT, Path(tmp) / "serve") as served:
        run_dir = Path(tmp) / "run"
        flow_run_id, _ = served.trigger(run_dir)
        for name, path in take(served, run_dir, flow_run_id, Path(args.out), browser).items():
            print(f"{name}: {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
