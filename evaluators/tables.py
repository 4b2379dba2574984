"""Evaluators that look architectures up in measured tables (benchmarks, labelled data sets).

A table is only as trustworthy as its worst row, so reading is strict: every metric cell must be
a finite number, every architecture must parse, and two rows for one encoding must agree; any
violation is a :class:`TableError` naming file, column and line. An architecture missing from the
table is a failed record, never a silent zero. Also here: NAS-Bench-201, NAS-Bench-Graph and
NATS-Bench lookups, and a safe importer for the AutoBuild authors' pickle caches. Table layouts,
duplicate and isomorphism rules, units: docs/evaluation.md.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import math
import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from search_spaces.errors import ConfigError, EncodingError, TableError, UnknownNameError

from .base import EvalRecord, Evaluator, canonical_json, exact_key, guess_unit, space_of, to_arch

_SUFFIXES = (".csv", ".jsonl", ".parquet")
_MISSING = object()
_BAD = object()


def file_sha256(path: str | os.PathLike) -> str:
    """The first 16 hex digits of the file's sha256 (what fingerprints a table's content).

    Args:
        path: the file.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _check_path(path: str | os.PathLike, what: str = "table") -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise TableError(f"{what} file {p} does not exist. Check the path (benchmark tables are not shipped "
                         "with the project; bring your own copy and point the setting at it).")
    if p.is_dir():
        raise TableError(f"{what} path {p} is a directory; give the table file itself ({', '.join(_SUFFIXES)}).")
    if p.suffix.lower() not in _SUFFIXES:
        raise TableError(f"{what} file {p} has suffix {p.suffix!r}; supported: {', '.join(_SUFFIXES)}.")
    return p


def _plain(v: Any) -> Any:
    """numpy scalars/arrays (from Parquet) -> Python values."""
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return v.tolist()
    return v


def read_rows(path: str | os.PathLike) -> tuple[list[str], list[dict], list[str]]:
    """``(columns, rows, where)``: raw cells and a human location ("line 7", "row 3") per row.

    CSV cells are read as text so that numbers are converted by Python's correctly rounded
    ``float()`` (a benchmark's values come back bit-identical) and so that a stray word in a
    numeric column is reported instead of silently becoming NaN.

    Args:
        path: a ``.csv``, ``.jsonl`` or ``.parquet`` table.

    Raises:
        TableError: a missing file, another suffix, or unreadable content.
    """
    p = _check_path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        import pandas as pd

        try:
            df = pd.read_csv(p, dtype=str, keep_default_na=False, skipinitialspace=True)
        except Exception as e:
            raise TableError(f"cannot read CSV table {p}: {e}") from e
        cols = [str(c).strip() for c in df.columns]
        rows = [dict(zip(cols, r)) for r in df.itertuples(index=False, name=None)]
        return cols, rows, [f"line {i + 2}" for i in range(len(rows))]
    if suffix == ".jsonl":
        rows, where, cols = [], [], {}
        with open(p) as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise TableError(f"{p}, line {n}: not valid JSON ({e}). Each line must be one JSON object.") from e
                if not isinstance(obj, dict):
                    raise TableError(f"{p}, line {n}: expected a JSON object, got {type(obj).__name__}.")
                rows.append(obj)
                where.append(f"line {n}")
                for k in obj:
                    cols.setdefault(k, None)
        return list(cols), rows, where
    import pandas as pd

    try:
        df = pd.read_parquet(p)
    except Exception as e:
        raise TableError(f"cannot read Parquet table {p}: {e}") from e
    cols = [str(c) for c in df.columns]
    rows = [{c: _plain(v) for c, v in zip(cols, r)} for r in df.itertuples(index=False, name=None)]
    return cols, rows, [f"row {i + 1}" for i in range(len(rows))]


def _number(v: Any) -> Any:
    """float, _MISSING (empty/None) or _BAD (not a number). NaN strings parse to nan."""
    v = _plain(v)
    if v is None:
        return _MISSING
    if isinstance(v, bool):
        return _BAD
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        s = v.strip()
        if not s:
            return _MISSING
        try:
            return float(s)
        except ValueError:
            return _BAD
    return _BAD


def _metric_columns(path, cols, rows, exclude: set, metrics: Sequence[str] | None) -> list[str]:
    if metrics is not None:
        missing = [m for m in metrics if m not in cols]
        if missing:
            raise TableError(f"{path}: metric column(s) {missing} not found; the table has columns {cols}. "
                             "Fix the metric names or the table header.")
        return list(metrics)
    out = []
    for c in cols:
        if c in exclude:
            continue
        if any(isinstance(_number(r.get(c)), float) for r in rows):
            out.append(c)
    if not out:
        raise TableError(f"{path}: no numeric metric column found (columns: {cols}). Add at least one measured "
                         "metric column, or pass metrics=[...].")
    return out


def _read_metrics(path, row: dict, where: str, metric_cols: Sequence[str]) -> dict[str, float]:
    out = {}
    for c in metric_cols:
        raw = row.get(c, None)
        v = _number(raw)
        if v is _MISSING:
            raise TableError(f"{path}, {where}, column {c!r}: value is missing/empty. Every row needs every metric; "
                             f"fill it in or delete the row (or leave the column out with metrics=[...]).")
        if v is _BAD:
            raise TableError(f"{path}, {where}, column {c!r}: {raw!r} is not a number. Fix the cell or delete the row "
                             f"(or leave the column out with metrics=[...]).")
        if not math.isfinite(v):
            raise TableError(f"{path}, {where}, column {c!r}: value is {raw!r} (not finite). A NaN label would poison "
                             "training; fix the cell or delete the row.")
        out[c] = v
    return out


def _same(a: dict, b: dict) -> str | None:
    """The first metric on which two rows disagree, or None."""
    for k in a:
        if not math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-12):
            return k
    return None


def _decode_cell(v: Any) -> Any:
    """Encodings stored as JSON text (lists/dicts in CSV or Parquet) back to objects."""
    v = _plain(v)
    if isinstance(v, str):
        s = v.strip()
        if s[:1] in "[{":
            try:
                return json.loads(s)
            except json.JSONDecodeError:
                return v
    return v


def _decode_field(v: Any) -> Any:
    v = _decode_cell(v)
    if isinstance(v, str):  # CSV text of a number
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


class _LookupEvaluator(Evaluator):
    """Shared lookup: ``self._table`` maps record keys to metric dicts."""

    deterministic = True
    batch_size = 256
    path: Path

    def _entry_key(self, space, arch) -> str:
        return self.record_key(space, arch)

    def _check_space(self, space) -> None:
        pass

    def evaluate(self, space, archs: Sequence, seed: int = 0) -> list[EvalRecord]:
        space = space_of(space)
        self._check_space(space)
        table = self._loaded()
        out = []
        for a in archs:
            arch = to_arch(space, a)
            try:
                k = self._entry_key(space, arch)
            except Exception as e:  # a space-specific formatting problem is this architecture's failure
                out.append(self.failed_record(space, arch, seed, f"cannot compute the table key: {type(e).__name__}: {e}"))
                continue
            m = table.get(k)
            if m is None:
                out.append(self.failed_record(space, arch, seed, f"not in table: {self.path} has no row for {k}"))
            else:
                out.append(self.make_record(space, arch, seed, dict(m)))
        return out

    def _loaded(self) -> dict:
        return self._table

    def metric_names(self) -> list[str] | None:
        return list(self.metric_units)


class TableEvaluator(_LookupEvaluator):
    """Labelled table of any space (layouts and duplicate rules: docs/evaluation.md).

    Args:
        space: the space the table's architectures belong to (instance or name).
        path: a ``.csv``, ``.jsonl`` or ``.parquet`` file.
        metrics: metric columns to read (default: every numeric column except the encoding's
            and ``index``).
        match: ``"isomorphic"`` (rows with the same ``space.key`` are averaged; records are keyed
            by ``space.key``) or ``"exact"`` (each encoding keeps its own values and key).
        units: metric name -> unit, overriding the guess of :func:`~evaluators.base.guess_unit`.
        arch_column: the column holding native encodings.
        encoding_fields: when there is no ``arch_column``, the columns that together form a dict
            encoding (default: the keys of the space's dict encoding, e.g. OFA's ``ks/e/d/r``).

    Raises:
        TableError: the file breaks a rule (message names file, column and line).

    Example:
        >>> ev = TableEvaluator("ofa_mbv3", "/path/to/ofa_mbv3_top1.jsonl")  # doctest: +SKIP
        >>> ev.stats, ev.metrics  # doctest: +SKIP
    """

    name = "table"
    version = "1"

    def __init__(self, space, path: str | os.PathLike, metrics: Sequence[str] | None = None, match: str = "isomorphic",
                 units: dict[str, str] | None = None, arch_column: str = "arch", encoding_fields: Sequence[str] | None = None):
        if match not in ("isomorphic", "exact"):
            raise ConfigError(f"match must be 'isomorphic' or 'exact', not {match!r}")
        self.space = space_of(space)
        self.path = _check_path(path)
        self.match = match
        self.arch_column = arch_column
        self._sha = file_sha256(self.path)
        cols, rows, where = read_rows(self.path)
        if not rows:
            raise TableError(f"{self.path}: the table has no rows.")
        if arch_column in cols:
            enc_fields: list[str] = []
        else:
            enc_fields = list(encoding_fields) if encoding_fields is not None else self._default_fields()
            if not enc_fields:
                raise TableError(f"{self.path}: no {arch_column!r} column (columns: {cols}). Add a column {arch_column!r} "
                                 f"holding each architecture's native {self.space.name} encoding.")
            missing = [f for f in enc_fields if f not in cols]
            if missing:
                raise TableError(f"{self.path}: neither an {arch_column!r} column nor the encoding field(s) {missing} of "
                                 f"space {self.space.name!r} (columns: {cols}). Add them, or an {arch_column!r} column.")
        self.encoding_fields = enc_fields
        exclude = set(enc_fields) | {arch_column, "index"}
        self.metrics = _metric_columns(self.path, cols, rows, exclude, metrics)
        self.metric_units = {m: (units or {}).get(m, guess_unit(m)) for m in self.metrics}

        exact: dict[str, tuple[str, dict, Any]] = {}
        dups = 0
        for row, w in zip(rows, where):
            arch = self._parse_row(row, w)
            m = _read_metrics(self.path, row, w, self.metrics)
            ek = exact_key(self.space, arch)
            if ek in exact:
                w0, m0, _ = exact[ek]
                bad = _same(m0, m)
                if bad is not None:
                    raise TableError(
                        f"{self.path}: {w0} and {w} hold the same architecture with different {bad!r} "
                        f"({m0[bad]!r} vs {m[bad]!r}), column {bad!r}. Keep one row, or average repeated "
                        "measurements before loading.")
                dups += 1
                continue
            exact[ek] = (w, m, arch)
        iso_dups = 0
        self._rows = [(arch, m) for _, m, arch in exact.values()]
        if match == "exact":
            table = {k: m for k, (_, m, _) in exact.items()}
        else:
            groups: dict[str, list[dict]] = {}
            for _, m, arch in exact.values():
                groups.setdefault(self.space.key(arch), []).append(m)
            table = {}
            for k, ms in groups.items():
                iso_dups += len(ms) - 1
                table[k] = {c: sum(x[c] for x in ms) / len(ms) for c in self.metrics}
        self._table = table
        self.stats = {"rows": len(rows), "entries": len(table), "duplicates": dups, "isomorphic_duplicates": iso_dups}

    def _default_fields(self) -> list[str]:
        try:
            sample = self.space.format(self.space.sample(1, seed=0)[0])
        except Exception:
            return []
        return list(sample) if isinstance(sample, dict) else []

    def _parse_row(self, row: dict, where: str):
        if self.encoding_fields:
            obj = {f: _decode_field(row.get(f)) for f in self.encoding_fields}
        else:
            obj = _decode_cell(row.get(self.arch_column))
            if obj is None or obj == "":
                raise TableError(f"{self.path}, {where}, column {self.arch_column!r}: empty architecture cell.")
        try:
            return self.space.parse(obj)
        except EncodingError as e:
            col = self.arch_column if not self.encoding_fields else "/".join(self.encoding_fields)
            raise TableError(f"{self.path}, {where}, column {col!r}: not a valid {self.space.name} architecture ({e}). "
                             "Fix or delete the row.") from e

    def record_key(self, space, arch) -> str:
        return exact_key(space, arch) if self.match == "exact" else space.key(arch)

    def _check_space(self, space) -> None:
        if space.name != self.space.name:
            raise ConfigError(f"table {self.path} holds {self.space.name!r} architectures, asked to evaluate {space.name!r} ones")

    def settings(self) -> dict:
        return {"space": self.space.name, "table_sha256": self._sha, "metrics": list(self.metrics), "match": self.match}

    def items(self, space=None) -> list:
        """Every distinct (Arch, metrics) row of the table, in file order.

        Args:
            space: unused (the table knows its space); accepted for the evaluator contract.
        """
        return [(a, dict(m)) for a, m in self._rows]

    def lookup(self, arch) -> dict[str, float] | None:
        """Metrics of one architecture, or None when the table lacks it.

        Args:
            arch: an ``Arch`` or native encoding of the table's space.
        """
        arch = to_arch(self.space, arch)
        m = self._table.get(self.record_key(self.space, arch))
        return None if m is None else dict(m)

    def __len__(self) -> int:
        return len(self._table)


class NB201TableEvaluator(_LookupEvaluator):
    """NAS-Bench-201 table (``index, arch`` and metric columns, e.g. ``cifar10_test_acc`` or
    ``cifar100_test_acc``), optionally joined by ``index`` with a latency table whose columns
    become metrics ``latency_<device>``.

    Looked up, and keyed, by the exact official string: isomorphic strings were trained
    separately and carry different values. Values are returned unrounded.

    Args:
        path: the accuracy table (``index``, ``arch``, one or more numeric metric columns).
        latency_path: optional table of ``index`` plus one column per device, in milliseconds;
            it must cover every index of the accuracy table.

    Raises:
        TableError: missing columns (or no numeric metric column), a row that is not an NB-201
            string, repeated indices, or disagreeing duplicate rows.

    Example:
        >>> ev = NB201TableEvaluator("/path/to/nb201_cifar10.csv")  # doctest: +SKIP
        >>> ev.lookup(0)  # doctest: +SKIP
    """

    name = "nb201_table"
    version = "1"
    required = ("index", "arch")

    def __init__(self, path: str | os.PathLike, latency_path: str | os.PathLike | None = None):
        self.path = _check_path(path, "NAS-Bench-201 table")
        self.latency_path = None if latency_path is None else _check_path(latency_path, "NAS-Bench-201 latency table")
        self._sha = file_sha256(self.path)
        self._lat_sha = None if self.latency_path is None else file_sha256(self.latency_path)
        cols, rows, where = read_rows(self.path)
        missing = [c for c in self.required if c not in cols]
        if missing:
            raise TableError(f"{self.path}: missing column(s) {missing}; a NAS-Bench-201 table needs {list(self.required)} "
                             f"and one or more metric columns such as 'cifar10_test_acc' (found {cols}).")
        acc_cols = _metric_columns(self.path, cols, rows, {"index", "arch"}, None)
        table: dict[str, dict] = {}
        by_index: dict[int, str] = {}
        where_of: dict[str, str] = {}
        dups = 0
        for row, w in zip(rows, where):
            idx = self._index(self.path, row, w)
            s = str(row.get("arch") or "").strip()
            if not s.startswith("|"):
                raise TableError(f"{self.path}, {w}, column 'arch': {row.get('arch')!r} is not an NB-201 string "
                                 "like '|nor_conv_3x3~0|+|...|'. Fix or delete the row.")
            m = _read_metrics(self.path, row, w, acc_cols)
            if idx in by_index and by_index[idx] != s:
                raise TableError(f"{self.path}, {w}, column 'index': index {idx} is used again for a different "
                                 f"architecture (first at {where_of[by_index[idx]]}). Indices must be unique.")
            if s in table:
                bad = _same(table[s], m)
                if bad is not None:
                    raise TableError(f"{self.path}: {where_of[s]} and {w} hold the same architecture with different "
                                     f"{bad!r} ({table[s][bad]!r} vs {m[bad]!r}), column {bad!r}. Keep one row.")
                dups += 1
                continue
            table[s], by_index[idx], where_of[s] = m, s, w
        self.metrics = list(acc_cols)
        if self.latency_path is not None:
            self.metrics += self._join_latency(table, by_index, where_of)
        self.metric_units = {m: ("ms" if m.startswith("latency_") else guess_unit(m)) for m in self.metrics}
        self._table, self._by_index = table, by_index
        self.stats = {"rows": len(rows), "entries": len(table), "duplicates": dups, "isomorphic_duplicates": 0}

    @staticmethod
    def _index(path, row, w) -> int:
        v = _number(row.get("index"))
        if not isinstance(v, float) or not math.isfinite(v) or v != int(v):
            raise TableError(f"{path}, {w}, column 'index': {row.get('index')!r} is not an integer index. Fix or delete the row.")
        return int(v)

    def _join_latency(self, table, by_index, where_of) -> list[str]:
        p = self.latency_path
        cols, rows, where = read_rows(p)
        if "index" not in cols:
            raise TableError(f"{p}: missing column 'index' (found {cols}); the latency table is joined by NB-201 index.")
        devices = _metric_columns(p, cols, rows, {"index", "arch"}, None)
        names = {d: f"latency_{d}" for d in devices}
        seen: dict[int, str] = {}
        lat: dict[int, dict] = {}
        for row, w in zip(rows, where):
            idx = self._index(p, row, w)
            if idx in seen:
                raise TableError(f"{p}, {w}, column 'index': index {idx} appears twice (first at {seen[idx]}). Keep one row.")
            seen[idx] = w
            lat[idx] = _read_metrics(p, row, w, devices)
        for idx, s in by_index.items():
            if idx not in lat:
                raise TableError(f"{p}: no latency row for index {idx} ({where_of[s]} of {self.path}). The latency table "
                                 "must cover every architecture of the accuracy table; add the row or drop latency_path.")
            table[s].update({names[d]: v for d, v in lat[idx].items()})
        return [names[d] for d in devices]

    def _entry_key(self, space, arch) -> str:
        s = space.format(arch)
        if not isinstance(s, str):
            raise EncodingError(f"space {space.name!r} formats architectures as {type(s).__name__}, not NB-201 strings")
        return s

    def record_key(self, space, arch) -> str:
        return exact_key(space, arch)

    def settings(self) -> dict:
        return {"table_sha256": self._sha, "latency_sha256": self._lat_sha, "metrics": list(self.metrics)}

    def lookup(self, arch: str | int) -> dict[str, float] | None:
        """Metrics of an official NB-201 string or index (None when absent).

        Args:
            arch: the official string or the topology index.
        """
        if isinstance(arch, int) and not isinstance(arch, bool):
            s = self._by_index.get(arch)
            return None if s is None else dict(self._table[s])
        m = self._table.get(str(arch).strip())
        return None if m is None else dict(m)

    def items(self, space) -> list:
        """Every (Arch, metrics) row, in the table's order.

        Args:
            space: the ``nb201`` space (instance or name).
        """
        space = space_of(space)
        return [(space.parse(s), dict(m)) for s, m in self._table.items()]

    def index_of(self, arch: str) -> int | None:
        """The topology index of an official string (None when absent).

        Args:
            arch: the official NB-201 string.
        """
        for i, s in self._by_index.items():
            if s == arch:
                return i
        return None

    def __len__(self) -> int:
        return len(self._table)


class NASBenchGraphEvaluator(_LookupEvaluator):
    """NAS-Bench-Graph lookups via ``search_spaces.nasbench_graph.load_bench(dataset)``, loaded
    on first use. Keys are the space's (isomorphism-aware) keys, as ``load_bench`` provides them.
    Units follow ``load_bench``: ``acc`` and ``valid_acc`` in % (for ``proteins`` they are
    ROC-AUC × 100), ``latency_ms`` in ms, ``params`` a count.

    Args:
        dataset: one of ``search_spaces.nasbench_graph.DATASETS`` (checked at once).
    """

    name = "nasbench_graph"
    version = "1"

    def __init__(self, dataset: str = "cora"):
        from search_spaces.nasbench_graph import DATASETS

        # Checked here, not on first lookup: a misspelt dataset would otherwise surface as one
        # definitive "failed" record per architecture instead of one error naming the setting.
        if str(dataset).lower() not in DATASETS:
            raise UnknownNameError("NAS-Bench-Graph dataset", str(dataset), DATASETS)
        self.dataset = str(dataset)
        self.path = Path(f"nas_bench_graph:{self.dataset}")
        self._table = None
        self.metric_units = {"acc": "%", "valid_acc": "%", "latency_ms": "ms", "params": "count"}

    def _loaded(self) -> dict:
        if self._table is None:
            try:
                from search_spaces.nasbench_graph import load_bench
            except ImportError as e:
                raise ConfigError(f"NAS-Bench-Graph evaluator needs search_spaces.nasbench_graph.load_bench: {e}") from e
            self._table = dict(load_bench(self.dataset))
        return self._table

    def items(self, space) -> list:
        """Every (Arch, metrics) entry of the dataset's table.

        Args:
            space: the ``nasbench_graph`` space (instance or name).
        """
        space = space_of(space)
        self._check_space(space)
        return [(space.parse(k), dict(m)) for k, m in self._loaded().items()]

    def _check_space(self, space) -> None:
        if space.name != "nasbench_graph":
            raise ConfigError(f"the NAS-Bench-Graph evaluator looks up 'nasbench_graph' architectures, not {space.name!r}")

    def settings(self) -> dict:
        try:
            from importlib.metadata import version

            v = version("nas-bench-graph")
        except Exception:
            v = "unknown"
        return {"dataset": self.dataset, "nas_bench_graph": v}


class NATSBenchEvaluator(_LookupEvaluator):
    """NB-201 lookups through the official ``nats_bench`` API (optional extra ``natsbench``) for
    other data sets and training schedules. Values are the mean over the benchmark's seeds.

    Args:
        path: the NATS-Bench topology file or directory.
        dataset: ``cifar10``, ``cifar100`` or ``ImageNet16-120``.
        hp: training schedule, ``"12"`` or ``"200"`` epochs.
    """

    name = "nats_bench"
    version = "1"

    def __init__(self, path: str | os.PathLike, dataset: str = "cifar10", hp: str = "200"):
        try:
            import nats_bench  # noqa: F401
        except ImportError as e:
            raise ConfigError("the nats_bench evaluator needs the optional package: pip install 'autobuild[natsbench]'") from e
        self.path = Path(path)
        if not self.path.exists():
            raise TableError(f"NATS-Bench file/directory {self.path} does not exist.")
        self.dataset, self.hp = str(dataset), str(hp)
        self._api = None
        self._table = {}
        self.metric_units = {"test_acc": "%", "train_time_s": "s"}

    def _loaded(self) -> dict:
        return self

    def get(self, s: str):  # dict-like for _LookupEvaluator.evaluate
        """Metrics of an official NB-201 string (None when the benchmark lacks it), cached.

        Args:
            s: the official NB-201 string.
        """
        if s in self._table:
            return self._table[s]
        if self._api is None:
            from nats_bench import create

            self._api = create(str(self.path), "tss", fast_mode=True, verbose=False)
        idx = self._api.query_index_by_arch(s)
        if idx is None or idx < 0:
            return None
        info = self._api.get_more_info(idx, self.dataset, hp=self.hp, is_random=False)
        m = {"test_acc": float(info["test-accuracy"])}
        if "train-all-time" in info:
            m["train_time_s"] = float(info["train-all-time"])
        self._table[s] = m
        return m

    def _entry_key(self, space, arch) -> str:
        return space.format(arch)

    def record_key(self, space, arch) -> str:
        return exact_key(space, arch)

    def settings(self) -> dict:
        return {"dataset": self.dataset, "hp": self.hp}


# ---- the authors' pickle caches ---------------------------------------------------------------------
_BLOCK_RE = re.compile(r"^\s*mbconv(?P<t>\d)[_\-]e(?P<e>\d+)[_\-]k(?P<k>\d+)\s*$", re.IGNORECASE)
_ALLOWED_GLOBALS = {("builtins", n) for n in ("list", "dict", "str", "float", "int")}


class _RestrictedUnpickler(pickle.Unpickler):
    """Only plain containers and numbers: a pickle that names any other class or function (the
    way pickles run code) is refused before it is called."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            return getattr(builtins, name)
        raise TableError(
            f"the pickle refers to {module}.{name}, which the restricted importer refuses: only lists, dicts, "
            "strings, ints and floats are accepted. Convert the cache to JSON in an environment you trust instead.")

    def persistent_load(self, pid):
        raise TableError("the pickle uses persistent ids, which the restricted importer refuses.")


def parse_block(block: str) -> tuple[int, int, int]:
    """Parse a block string of the authors' cache into MBConv version, expansion and kernel.

    The format is ``mbconv<version>_e<expansion>_k<kernel>``, case- and whitespace-insensitive,
    ``_`` or ``-`` between the parts. Anything else is rejected rather than guessed, because a
    mis-read kernel silently corrupts every label.

    Args:
        block: e.g. ``"mbconv3_e6_k5"``.

    Raises:
        ValueError: the string does not have that form.

    Example:
        >>> parse_block("mbconv3_e6_k5")
        (3, 6, 5)
    """
    m = _BLOCK_RE.match(str(block))
    if not m:
        raise ValueError(f"block {block!r} is not of the form 'mbconv<version>_e<expansion>_k<kernel>' (e.g. 'mbconv3_e6_k5')")
    return int(m["t"]), int(m["e"]), int(m["k"])


def _cache_arch(space, config, where: str):
    """Authors' ``[resolution, [[block, ...] per unit]]`` → Arch of ``space``.

    Layers become ``(e, k)``; the resolution becomes the space's resolution global (``r``, or its
    only global). When the cache has one unit more than the space, the last unit is merged into
    the one before (OFA-ProxylessNAS: its 1-layer 6th unit belongs to the 5th, see docs/spaces.md).
    """
    from search_spaces.base import Arch

    if not (isinstance(config, list) and len(config) == 2 and isinstance(config[1], list)):
        raise TableError(f"{where}: 'original config' must be [resolution, [[block, ...] per unit]], got {str(config)[:120]}")
    res, units = config
    try:
        layers = [[parse_block(b)[1:] for b in unit] for unit in units]
    except (ValueError, TypeError) as e:
        raise TableError(f"{where}: {e}") from e
    if len(layers) == len(space.units) + 1:
        layers = layers[:-2] + [layers[-2] + layers[-1]]
    gnames = list(space.global_choices)
    gname = "r" if "r" in gnames else (gnames[0] if len(gnames) == 1 else None)
    if gname is None:
        raise TableError(f"space {space.name!r} has globals {gnames}; cannot tell which one is the resolution")
    arch = Arch.make(layers, {gname: int(res)})
    try:
        space.validate(arch)
    except EncodingError as e:
        raise TableError(f"{where}: the configuration is not a {space.name} architecture: {e}") from e
    return arch


def import_authors_cache(pkl_path: str | os.PathLike, out_path: str | os.PathLike, allow_pickle: bool = False,
                         space="ofa_mbv3", metrics: Sequence[str] | None = None) -> dict:
    """Convert an AutoBuild authors' cache (e.g. ``ofa_mbv3_custom_cache.pkl``) once into a JSONL or
    Parquet table that :class:`TableEvaluator` reads.

    Each entry is a dict with ``"original config" = [resolution, [[block strings] per unit]]`` and
    numeric metrics (``acc``, ``latency_gpu``, ...). Rows are written as
    ``{"arch": <native encoding>, <metric>: value, ...}``. Unpickling can execute code, so this
    refuses unless ``allow_pickle=True`` and, even then, uses a restricted unpickler that accepts
    only lists, dicts, strings and numbers.

    Args:
        pkl_path: the authors' pickle.
        out_path: the table to write (``.jsonl`` or ``.parquet``; written atomically).
        allow_pickle: confirm that the pickle's origin is trusted.
        space: the space of the cache's architectures (instance or name).
        metrics: metrics to import (default: the keys numeric in the first entry); every entry
            must have all of them finite.

    Returns:
        ``{"rows", "metrics", "path"}``.

    Raises:
        ConfigError: ``allow_pickle`` is False, or a bad output suffix.
        TableError: the pickle is unreadable, refers to anything but plain data, or an entry
            is malformed.
    """
    pkl_path, out_path = Path(pkl_path), Path(out_path)
    if not allow_pickle:
        raise ConfigError(
            f"refusing to read {pkl_path}: loading a pickle can run arbitrary code embedded in the file. If you trust "
            "its origin, call import_authors_cache(..., allow_pickle=True) (CLI: --allow-pickle); it is then read with "
            "a restricted unpickler (plain lists/dicts/strings/numbers only) and converted once to a table.")
    if not pkl_path.exists():
        raise TableError(f"pickle cache {pkl_path} does not exist.")
    if out_path.suffix.lower() not in (".jsonl", ".parquet"):
        raise ConfigError(f"output {out_path} must end in .jsonl or .parquet")
    space = space_of(space)
    try:
        with open(pkl_path, "rb") as f:
            data = _RestrictedUnpickler(io.BufferedReader(f)).load()
    except TableError as e:
        raise TableError(f"{pkl_path}: {e}") from e
    except Exception as e:
        raise TableError(f"{pkl_path}: not a readable pickle ({type(e).__name__}: {e})") from e
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise TableError(f"{pkl_path}: expected a non-empty list of dicts (one per architecture).")
    if metrics is None:
        metrics = [k for k, v in data[0].items() if k != "original config" and isinstance(v, (int, float)) and not isinstance(v, bool)]
    metrics = list(metrics)
    if not metrics:
        raise TableError(f"{pkl_path}: the first entry has no numeric metrics (keys: {sorted(data[0])}).")
    rows = []
    for i, d in enumerate(data):
        where = f"{pkl_path}, entry {i}"
        if "original config" not in d:
            raise TableError(f"{where}: no 'original config' key (keys: {sorted(d)}).")
        arch = _cache_arch(space, d["original config"], where)
        row = {"arch": space.format(arch)}
        for m in metrics:
            v = d.get(m)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise TableError(f"{where}: metric {m!r} is {v!r}, not a finite number. Pass metrics=[...] to import "
                                 "only the metrics every entry has.")
            row[m] = float(v)
        rows.append(row)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    if out_path.suffix.lower() == ".jsonl":
        with open(tmp, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    else:
        import pandas as pd

        pd.DataFrame([{**r, "arch": r["arch"] if isinstance(r["arch"], str) else canonical_json(r["arch"])} for r in rows]).to_parquet(tmp, index=False)
    os.replace(tmp, out_path)
    return {"rows": len(rows), "metrics": metrics, "path": str(out_path)}


__all__ = ["TableEvaluator", "NB201TableEvaluator", "NASBenchGraphEvaluator", "NATSBenchEvaluator",
           "import_authors_cache", "parse_block", "read_rows", "file_sha256"]
