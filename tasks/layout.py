"""The run directory's layout: one object that the tasks write through, preflight checks and the
report reads, so the three cannot disagree about where anything lives.

A stage's output lives in ``stages/<stage>-<hash>``, the hash covering the stage's settings and the
fingerprints of its inputs (never a flow-run id), so a rerun of a killed run finds every finished
stage and resumes at the first unfinished one. Outputs are written under a temporary name and
renamed into place, so a kill never leaves half a stage. The stage directories a run used are
recorded in ``summary.json`` (``stages``) for readers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tasks.config import config_hash, resolve_in_run_dir

DONE = "done.json"


class RunLayout:
    """Paths of one run directory.

    Args:
        run_dir: the run directory (created by :meth:`create`, never by the constructor).
        store: the evaluation store, relative to the run directory (``evaluator.store``).
        optuna: the Optuna study file, relative to the run directory (``search.storage``).

    Example:
        >>> lay = RunLayout("runs/quickstart")
        >>> lay.summary.name
        'summary.json'
    """

    def __init__(self, run_dir: str | os.PathLike, store: str = "evaluations.sqlite", optuna: str = "optuna.db"):
        self.root = Path(run_dir).resolve()
        self._store, self._optuna = store, optuna

    @classmethod
    def of(cls, cfg, run_dir: str | os.PathLike) -> "RunLayout":
        """The layout of ``run_dir`` for a :class:`~tasks.config.RunConfig`."""
        return cls(run_dir, cfg.evaluator.store, cfg.search.storage)

    # ---- fixed files ----------------------------------------------------------------------------
    config = property(lambda self: self.root / "config.json")
    summary = property(lambda self: self.root / "summary.json")
    built = property(lambda self: self.root / "built.json")
    calibration = property(lambda self: self.root / "calibration.json")
    evaluations_csv = property(lambda self: self.root / "evaluations.csv")
    report = property(lambda self: self.root / "report.html")
    plots = property(lambda self: self.root / "plots")
    stages = property(lambda self: self.root / "stages")
    mlflow_db = property(lambda self: self.root / "mlflow.db")

    @property
    def store(self) -> Path:
        return resolve_in_run_dir(self.root, self._store, "evaluator.store")

    @property
    def optuna_url(self) -> str:
        return f"sqlite:///{resolve_in_run_dir(self.root, self._optuna, 'search.storage')}"

    def search_json(self, which: str) -> Path:
        return self.root / f"search_{which}.json"

    def create(self) -> "RunLayout":
        self.root.mkdir(parents=True, exist_ok=True)
        self.plots.mkdir(exist_ok=True)
        return self

    # ---- stages ---------------------------------------------------------------------------------
    def stage(self, name: str, *parts: Any) -> Path:
        """The directory of stage ``name`` for inputs ``parts`` (settings, fingerprints)."""
        return self.stages / f"{name}-{config_hash(*parts)}"

    def finished_stages(self) -> list[Path]:
        """Stage directories whose output was completely written."""
        if not self.stages.is_dir():
            return []
        return sorted(p for p in self.stages.iterdir() if p.is_dir() and not p.name.startswith(".") and done(p))

    def used_stage(self, summary: dict, name: str) -> Path | None:
        """The directory of stage ``name`` that the run behind ``summary`` used (None if it never got there)."""
        rel = (summary.get("stages") or {}).get(name)
        if not rel:
            return None
        p = (self.root / rel).resolve()
        return p if self.root in p.parents and done(p) else None

    def relative(self, path: Path) -> str:
        return str(Path(path).resolve().relative_to(self.root))


def done(path: Path) -> bool:
    """Whether stage directory ``path`` was completely written."""
    return (Path(path) / DONE).is_file()


def write_stage(path: Path, files: dict[str, Any], meta: dict | None = None) -> Path:
    """Write ``files`` (name -> str | bytes | JSON-able | callable(path)) atomically as stage ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        for name, content in files.items():
            target = tmp / name
            if callable(content):
                content(target)
            elif isinstance(content, bytes):
                target.write_bytes(content)
            elif isinstance(content, str):
                target.write_text(content, encoding="utf-8")
            else:
                target.write_text(json.dumps(content, indent=1, default=str), encoding="utf-8")
        (tmp / DONE).write_text(json.dumps(meta or {}, default=str), encoding="utf-8")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def write_json_atomic(path: Path, obj: Any) -> Path:
    """Write ``obj`` as JSON to ``path`` via a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)
    return path
