"""TransNAS-Bench-101 micro labels (NASLib's ``zc_transbench101_micro.json``) as an evaluator.

The file is ``{task: {"(t0, ..., t5)": record}}`` for seven tasks on the same cells; a record has
``val_accuracy``, ``flops``/``params`` and nine zero-cost proxies (each ``{"score": ...}``). Every
cell becomes one metric dict, so any task can be the target (``--target segmentsemantic``):
``<task>`` (the task's validation metric), ``<task>_flops``, ``<task>_params`` (the task's whole
network, decoder included) and ``<task>_zc_<proxy>``. NASLib writes -1e8 where a proxy failed: a
proxy failing on a cell whose output is reachable is left out for that task
(``stats["dropped_proxies"]``); on the 20 cells with an unreachable output (identically zero
networks) the value is kept, since it ranks those worst networks last.
Reading is strict (a missing or non-finite field is a TableError naming task, cell and field);
cells absent from the file are "not in table" failures. Lookup is by the exact cell.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Sequence

from search_spaces.errors import ConfigError, EncodingError, TableError, UnknownNameError

from .base import space_of, to_arch
from .tables import _LookupEvaluator, file_sha256

TASKS = ("class_scene", "class_object", "autoencoder", "normal", "jigsaw", "room_layout", "segmentsemantic")
PROXIES = ("grasp", "fisher", "grad_norm", "l2_norm", "plain", "nwot", "epe_nas", "jacov", "snip")
PROXY_FAILED = -1e8  # NASLib writes this score when a proxy could not be computed
TASK_UNITS = {"class_scene": "%", "class_object": "%", "jigsaw": "%", "segmentsemantic": "%", "autoencoder": "SSIM",
              "normal": "SSIM", "room_layout": "-L2"}
SPACE = "transnas_micro"


def proxy_metric(task: str, proxy: str) -> str:
    """Metric name of a zero-cost proxy score of a task's network, e.g. ``segmentsemantic_zc_snip``."""
    return f"{task}_zc_{proxy}"


def _score(path, task: str, cell: str, rec: dict, field: str) -> float:
    if field not in rec:
        raise TableError(f"{path}: task {task!r}, cell {cell}: field {field!r} is missing (has {sorted(rec)}).")
    v = rec[field]
    if field != "val_accuracy":
        if not isinstance(v, dict) or "score" not in v:
            raise TableError(f"{path}: task {task!r}, cell {cell}, field {field!r}: expected {{'score': ...}}, got {str(v)[:80]}.")
        v = v["score"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
        raise TableError(f"{path}: task {task!r}, cell {cell}, field {field!r}: {v!r} is not a finite number. Fix or delete the cell.")
    return float(v)


class TransNASTableEvaluator(_LookupEvaluator):
    """TransNAS-Bench-101 micro table (kind ``transnas_table``).

    Args:
        path: the JSON file (``{task: {cell: record}}``, NASLib's format).
        tasks: tasks whose metrics are exposed (default: all seven in the file's order).
        proxies: also expose FLOPs, parameters and zero-cost proxy scores (default True).
    """

    name = "transnas_table"
    version = "1"

    def __init__(self, path: str | os.PathLike, tasks: Sequence[str] | None = None, proxies: bool = True):
        self.path = _json_path(path)
        self.space = space_of(SPACE)
        self._sha = file_sha256(self.path)
        try:
            with open(self.path) as f:
                data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TableError(f"{self.path}: not valid JSON ({e}).") from e
        if not isinstance(data, dict) or not data or not all(isinstance(v, dict) for v in data.values()):
            raise TableError(f"{self.path}: expected {{task: {{cell: record}}}} as in NASLib's zc_transbench101_micro.json.")
        if tasks is None:
            tasks = [t for t in TASKS if t in data] + [t for t in data if t not in TASKS]
        tasks = [str(t) for t in tasks]
        for t in tasks:
            if t not in data:
                raise UnknownNameError("TransNAS-Bench-101 task", t, data)
        if not tasks:
            raise ConfigError("transnas_table: `tasks` is empty; name at least one task.")
        self.tasks, self.proxies = tasks, bool(proxies)
        cells = list(data[tasks[0]])
        for t in tasks[1:]:
            if set(data[t]) != set(cells):
                raise TableError(f"{self.path}: task {t!r} holds other cells than task {tasks[0]!r}; every task must label the same cells.")
        archs = {}
        for c in cells:
            try:
                archs[c] = self.space.parse(c)
            except EncodingError as e:
                raise TableError(f"{self.path}: cell key {c!r} is not a transnas_micro cell ({e}).") from e
        table: dict[str, dict] = {self.space.key(a): {} for a in archs.values()}
        if len(table) != len(cells):
            raise TableError(f"{self.path}: two cell keys denote the same cell; keep one.")
        live = {c: self.space.output_reachable(a) for c, a in archs.items()}
        self.metric_units: dict[str, str] = {}
        dropped: dict[str, list] = {}
        for t in tasks:
            fields = ["val_accuracy"] + (["flops", "params"] + [p for p in PROXIES] if self.proxies else [])
            vals = {f: {c: _score(self.path, t, c, data[t][c], f) for c in cells} for f in fields}
            for f in fields:
                if f in PROXIES and any(v == PROXY_FAILED and live[c] for c, v in vals[f].items()):
                    dropped.setdefault(t, []).append(f)
                    continue
                m = t if f == "val_accuracy" else (f"{t}_{f}" if f in ("flops", "params") else proxy_metric(t, f))
                self.metric_units[m] = TASK_UNITS.get(t, "") if f == "val_accuracy" else ("M" if f in ("flops", "params") else "")
                for c in cells:
                    table[self.space.key(archs[c])][m] = vals[f][c]
        self.metrics = list(self.metric_units)
        self._table = table
        self._archs = list(archs.values())
        self.stats = {"rows": len(cells), "entries": len(table), "tasks": list(tasks), "dropped_proxies": dropped}

    def _check_space(self, space) -> None:
        if space.name != SPACE:
            raise ConfigError(f"the TransNAS-Bench-101 table holds {SPACE!r} cells, asked to evaluate {space.name!r} ones")

    def settings(self) -> dict:
        return {"table_sha256": self._sha, "tasks": list(self.tasks), "proxies": self.proxies}

    # ---- what the table holds ----------------------------------------------------------------
    def metric_names(self) -> list[str]:
        """Every metric a record carries."""
        return list(self.metrics)

    def items(self, space=None) -> list:
        """(Arch, metrics) of every labelled cell, in file order."""
        return [(a, dict(self._table[self.space.key(a)])) for a in self._archs]

    def lookup(self, arch) -> dict[str, float] | None:
        """Metrics of a cell in any encoding the space parses (None when not labelled)."""
        m = self._table.get(self.space.key(to_arch(self.space, arch)))
        return None if m is None else dict(m)

    def proxy_names(self, task: str) -> list[str]:
        """The zero-training scores of ``task`` this table exposes (FLOPs, parameters, proxies)."""
        return [m for m in self.metrics if m in (f"{task}_flops", f"{task}_params") or m.startswith(f"{task}_zc_")]

    def __len__(self) -> int:
        return len(self._table)


def _json_path(path) -> Path:
    """The path, checked: an existing ``.json`` file."""
    p = Path(path).expanduser()
    if p.suffix.lower() != ".json":
        raise TableError(f"TransNAS-Bench-101 file {p} must be NASLib's JSON (zc_transbench101_micro.json), not {p.suffix!r}.")
    if not p.exists():
        raise TableError(f"TransNAS-Bench-101 file {p} does not exist. Check the path (benchmark data is not shipped with the "
                         "project; bring your own copy of NASLib's zc_transbench101_micro.json and point the setting at it).")
    if p.is_dir():
        raise TableError(f"TransNAS-Bench-101 path {p} is a directory; give the JSON file itself.")
    return p


__all__ = ["TransNASTableEvaluator", "TASKS", "PROXIES", "proxy_metric"]
