"""Helpers shared by the tasks: stage outputs keyed by their inputs, evaluator/space construction.

A stage's output lives in ``<run dir>/stages/<stage>-<hash>`` where the hash covers the config
sections and the fingerprints of the stage's inputs (never the flow-run id), so a rerun of a
killed or failed run finds every finished stage and resumes at the first unfinished one.
Outputs are written to a temporary name and renamed into place, so a kill never leaves half a stage.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tasks.config import RunConfig, config_hash, resolve_in_run_dir


def stage_dir(run_dir: str | os.PathLike, stage: str, *parts: Any) -> Path:
    return Path(run_dir).resolve() / "stages" / f"{stage}-{config_hash(*parts)}"


def stage_done(path: Path) -> bool:
    return (path / "done.json").is_file()


def write_stage(path: Path, files: dict[str, Any], meta: dict | None = None) -> Path:
    """Write ``files`` (name -> str | bytes | JSON-able | callable(dir)) atomically as stage ``path``."""
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
        (tmp / "done.json").write_text(json.dumps(meta or {}, default=str), encoding="utf-8")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, default=str)
    os.replace(tmp, path)
    return path


def get_space(name: str):
    from search_spaces import get_space as _get

    return _get(name)


def make_evaluator(kind: str, settings: dict):
    from evaluators import get_evaluator

    return get_evaluator(kind, **dict(settings))


def store_path(cfg: RunConfig, run_dir: str | os.PathLike) -> Path:
    return resolve_in_run_dir(run_dir, cfg.evaluator.store, "evaluator.store")


def optuna_url(cfg: RunConfig, run_dir: str | os.PathLike) -> str:
    return f"sqlite:///{resolve_in_run_dir(run_dir, cfg.search.storage, 'search.storage')}"
