"""MLflow tracking for the pipeline: one parent run per flow run, child runs per stage.

Everything goes through an explicit :class:`mlflow.MlflowClient` and explicit run ids (never the
fluent API's thread-local "active run"), because Prefect runs tasks in worker threads. Children
carry ``mlflow.parentRunId`` so the MLflow UI nests them under the parent.

Default tracking URI: ``sqlite:///<run dir>/mlflow.db`` with artifacts in ``<run dir>/mlartifacts``.
A remote tracking server that does not answer within ``tracking.timeout_s`` is reported as a clear
:class:`~search_spaces.errors.ConfigError` before any work starts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from search_spaces.errors import ConfigError

log = logging.getLogger(__name__)


#: the experiment tag MLflow 3's UI reads to choose between its GenAI and machine-learning views
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: the address of the `mlflow ui` command the CLI prints for a run's SQLite store
LOCAL_UI = "http://127.0.0.1:5000"
#: metric names that would read as something else in the MLflow UI (``params`` beside its Parameters)
_RENAMED_METRICS = {"params": "n_params"}


def metric_name(name: str) -> str:
    """An MLflow metric name for a metric or target expression: the name itself where MLflow allows
    it (letters, digits, ``_ - . : /`` and spaces), other characters replaced by ``_``."""
    name = _RENAMED_METRICS.get(name.strip(), name.strip())
    return re.sub(r"[^A-Za-z0-9_\-.:/ ]+", "_", name).strip() or "target"


def default_tracking_uri(run_dir: str | os.PathLike) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def check_reachable(uri: str, timeout_s: float) -> None:
    """Raise ConfigError if an http(s) tracking server does not answer ``/health`` in time."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - user-given server URL
            resp.read(64)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):  # alive, behind basic auth
            return
        raise ConfigError(f"MLflow tracking server {uri} answered {e.code} on /health. Check tracking.tracking_uri.") from None
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError(
            f"MLflow tracking server {uri} is unreachable ({reason}) within {timeout_s:g}s. Start it "
            "(`autobuild serve`), fix tracking.tracking_uri, or unset it to track in the run directory "
            "(or set tracking.enabled=false)."
        ) from None


#: how a write that lost a race to insert the same row reads: PostgreSQL, SQLite, MySQL, SQLAlchemy
_CONFLICT = re.compile(r"UniqueViolation|duplicate key|UNIQUE constraint failed|Duplicate entry|IntegrityError")


def is_write_conflict(exc: BaseException) -> bool:
    """True for an MLflow error caused by a concurrent insert of the same row (a unique-key race).

    MLflow's SQL store sets tags and aliases with select-then-insert, so two processes setting the
    same new key at once (8 runs starting on a fresh server) make one of them fail; retrying reads
    the row the other inserted and succeeds.
    """
    return bool(_CONFLICT.search(str(exc)))


def retry_on_conflict(fn, *args, attempts: int = 5, **kwargs):
    """Call ``fn(*args, **kwargs)``, retrying (with a short random back-off) while it fails with a
    write conflict (:func:`is_write_conflict`); other errors, and the last conflict, are raised.

    Only for idempotent writes (set a tag or alias) and writes that leave nothing behind when they
    fail (creating a model version: the failed transaction is rolled back).
    """
    import random
    import time

    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - re-raised below unless it is a conflict
            if attempt == attempts - 1 or not is_write_conflict(e):
                raise
            log.info("MLflow write conflict (%s); retrying", str(e).splitlines()[0][:120])
            time.sleep(random.uniform(0.05, 0.3) * (attempt + 1))


def flatten(d: Any, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list) and d and all(isinstance(v, dict) for v in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix.rstrip(".")] = json.dumps(d) if isinstance(d, (list, dict)) else str(d)
    return out


class _NullRun:
    """Stands in for a run when tracking is disabled: every call is a no-op."""

    run_id = None

    def __getattr__(self, name):
        return lambda *a, **k: None


class Run:
    """A thin handle on one MLflow run (parent or child)."""

    def __init__(self, tracker: "Tracker", run_id: str):
        self.tracker, self.run_id = tracker, run_id
        self.client = tracker.client

    def params(self, params: dict) -> None:
        flat = {k[:250]: (v if len(v) <= 6000 else v[:5997] + "...") for k, v in flatten(params).items()}
        items = list(flat.items())
        from mlflow.entities import Param

        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i:i + 100]])

    def metrics(self, values: dict, step: int | None = None) -> None:
        from mlflow.entities import Metric
        import time

        ts = int(time.time() * 1000)
        ms = [Metric(k, float(v), ts, int(step or 0)) for k, v in values.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]
        if ms:
            self.client.log_batch(self.run_id, metrics=ms)

    def tags(self, tags: dict) -> None:
        for k, v in tags.items():
            retry_on_conflict(self.client.set_tag, self.run_id, k, str(v))

    def artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        p = Path(path)
        if p.is_dir():
            self.client.log_artifacts(self.run_id, str(p), artifact_path)
        elif p.is_file():
            self.client.log_artifact(self.run_id, str(p), artifact_path)

    def text(self, text: str, file_name: str) -> None:
        self.client.log_text(self.run_id, text, file_name)

    def dict(self, obj: Any, file_name: str) -> None:
        self.client.log_dict(self.run_id, obj, file_name)

    def figure(self, fig, file_name: str) -> None:
        self.client.log_figure(self.run_id, fig, file_name)

    def artifact_uri(self, sub: str = "") -> str:
        uri = self.client.get_run(self.run_id).info.artifact_uri
        return f"{uri}/{sub}" if sub else uri

    def log_model(self, model_dir: str | os.PathLike, artifact_path: str) -> None:
        """Log a saved MLflow model directory (``MLmodel`` at its root) as ``artifact_path``."""
        self.client.log_artifacts(self.run_id, str(model_dir), artifact_path)

    def register(self, model_name: str, artifact_path: str, description: str = "", tags: dict | None = None,
                 aliases: Iterable[str] = (), model_description: str = "") -> str | None:
        """Register the model logged at ``artifact_path`` as a new version of ``model_name`` and point
        ``aliases`` at it. ``model_description`` describes the registered model as a whole (so it
        never names one version); ``description`` describes this version."""
        if not self.tracker.register_models:
            return None
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(model_name, description=model_description or None)
        except MlflowException as e:
            exists = "already exists" in str(e).lower() or getattr(e, "error_code", "") == "RESOURCE_ALREADY_EXISTS"
            if not (exists or is_write_conflict(e)):
                raise
            if model_description:
                retry_on_conflict(self.client.update_registered_model, model_name, description=model_description)
        mv = retry_on_conflict(self.client.create_model_version, model_name, source=self.artifact_uri(artifact_path), run_id=self.run_id,
                               tags={k: str(v) for k, v in (tags or {}).items()}, description=description or None)
        for alias in aliases:
            retry_on_conflict(self.client.set_registered_model_alias, model_name, alias, mv.version)
        return str(mv.version)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


class Tracker:
    """MLflow client bound to one tracking URI and experiment."""

    def __init__(self, tracking, run_dir: str | os.PathLike):
        self.enabled = bool(tracking.enabled)
        self.register_models = bool(tracking.register_models)
        self.run_dir = Path(run_dir).resolve()
        # AUTOBUILD_TRACKING_URI: set by `autobuild serve` for its worker, so deployed runs log to the
        # served MLflow unless their config names a tracking URI of its own.
        self.uri = tracking.tracking_uri or os.environ.get("AUTOBUILD_TRACKING_URI") or default_tracking_uri(self.run_dir)
        self.client = None
        self.experiment_id = None
        if not self.enabled:
            return
        check_reachable(self.uri, tracking.timeout_s)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(5, tracking.timeout_s))))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        logging.getLogger("alembic").setLevel(logging.WARNING)
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        exp = self.client.get_experiment_by_name(tracking.experiment)
        if exp is None:
            art = (self.run_dir / "mlartifacts").as_uri() if self.uri.startswith("sqlite:") else None
            try:
                self.experiment_id = self.client.create_experiment(tracking.experiment, artifact_location=art)
            except Exception:  # created concurrently by another process
                exp = self.client.get_experiment_by_name(tracking.experiment)
                if exp is None:
                    raise
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id
        if exp is None or exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            # without it, MLflow 3's UI opens an experiment with no traces on its GenAI overview, not the runs
            retry_on_conflict(self.client.set_experiment_tag, self.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)

    def ui_url(self) -> str:
        """Where a browser shows this store: the server itself, or the `mlflow ui` the CLI prints."""
        return self.uri.rstrip("/") if self.uri.startswith(("http://", "https://")) else LOCAL_UI

    def runs_url(self, run_id: str | None = None) -> str | None:
        """The experiment's runs view (or one run) in the MLflow UI."""
        if not self.enabled:
            return None
        base = f"{self.ui_url()}/#/experiments/{self.experiment_id}"
        return f"{base}/runs/{run_id}" if run_id else f"{base}/runs"

    def start(self, name: str, parent: "Run | None" = None, tags: dict | None = None) -> Run:
        if not self.enabled:
            return _NullRun()  # type: ignore[return-value]
        t = {k: str(v) for k, v in (tags or {}).items()}
        if parent is not None and parent.run_id:
            t["mlflow.parentRunId"] = parent.run_id
        r = self.client.create_run(self.experiment_id, run_name=name, tags=t)
        return Run(self, r.info.run_id)


# ---- plots (matplotlib's object API: no pyplot state, safe in Prefect's worker threads) ----------


def _figure(w: float, h: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    return fig, fig.subplots(1, ncols)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_training(history: list[dict], path: Path, best_epoch: int | None = None) -> Path | None:
    """Training losses and validation Spearman per epoch (the kept checkpoint marked)."""
    if not history:
        return None
    fig, ax = _figure(10, 3.5, 2)
    ep = [h.get("epoch", i) for i, h in enumerate(history)]
    for key in ("loss", "mse", "rank_loss"):
        ys = [h.get(key) for h in history]
        if any(y is not None for y in ys):
            ax[0].plot(ep, [math.nan if y is None else y for y in ys], label=key)
    ax[0].set_xlabel("epoch"); ax[0].set_title("training loss"); ax[0].legend()
    vs = [(e, h["val_pred_spearman"]) for e, h in zip(ep, history) if h.get("val_pred_spearman") is not None]
    if vs:
        ax[1].plot([e for e, _ in vs], [v for _, v in vs], marker="o", label="prediction")
        if best_epoch is not None:
            ax[1].axvline(best_epoch, color="#aa3377", ls="--", label="kept checkpoint")
        ax[1].legend()
    ax[1].set_xlabel("epoch"); ax[1].set_title("validation Spearman")
    return _save(fig, path)


def plot_hops(hop_spearman: Iterable[float], path: Path) -> Path | None:
    """Spearman of each hop's embedding norm with the target."""
    hs = [float(h) for h in (hop_spearman or [])]
    if not hs:
        return None
    fig, ax = _figure(5, 3.5)
    ax.bar(range(len(hs)), hs, color="#4477aa")
    ax.set_xlabel("hop m"); ax.set_ylabel("Spearman(‖h_G^m‖₁, target)"); ax.set_title("per-hop Spearman")
    ax.set_ylim(min(0.0, min(hs) - 0.05), 1.0)
    return _save(fig, path)


def plot_unit_scores(scores, path: Path) -> Path | None:
    """Distribution of the configuration scores of each unit."""
    if scores is None or len(scores) == 0:
        return None
    units = sorted(scores["unit"].unique())
    fig, ax = _figure(max(5, 1.2 * len(units)), 3.5)
    data = [scores.loc[scores["unit"] == u, "score"].to_numpy() for u in units]
    names = [str(scores.loc[scores["unit"] == u, "unit_name"].iloc[0]) if "unit_name" in scores else str(u) for u in units]
    ax.boxplot(data)
    ax.set_xticks(range(1, len(units) + 1), names, rotation=30)
    ax.set_ylabel("score"); ax.set_title("unit configuration scores")
    return _save(fig, path)


def plot_search(trajectory: list[float], path: Path, label: str, seeds: int = 0) -> Path | None:
    """Best value found after each evaluation (seed evaluations shaded)."""
    if not trajectory:
        return None
    fig, ax = _figure(5.5, 3.5)
    ax.plot(range(1, len(trajectory) + 1), trajectory, label=label)
    if seeds:
        ax.axvspan(0.5, seeds + 0.5, color="#dddddd", label="seeds")
    ax.set_xlabel("evaluations"); ax.set_ylabel(f"best {label}"); ax.set_title("search progress"); ax.legend()
    return _save(fig, path)
