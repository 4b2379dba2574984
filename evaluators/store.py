"""A durable, shareable record of every evaluation, and the loop that fills it.

Evaluations are the expensive part of the method, so every batch of records is committed to an
SQLite file (WAL mode) before the next batch starts: a crash loses at most the batch in flight,
and a rerun evaluates only what is missing. The first definitive record for
``(space, key, fingerprint, seed)`` wins; only a transient failure is a placeholder that a later
record replaces. Keep the store on a local disk. Why SQLite, and the full write rules:
docs/evaluation.md.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from search_spaces.errors import AutoBuildError, CheckpointError, ConfigError

from .base import (
    STATUS_FAILED,
    EvalRecord,
    EvaluationError,
    Evaluator,
    TransientEvaluationError,
    canonical_json,
    parse_all,
)

SCHEMA_VERSION = "1"
_LOCK_RETRY_SECONDS = 120.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    space TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    seed INTEGER NOT NULL,
    arch TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    metrics TEXT NOT NULL,
    error TEXT,
    seconds REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 1,
    transient INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    pid INTEGER,
    UNIQUE (space, key, fingerprint, seed)
);
CREATE INDEX IF NOT EXISTS evaluations_fp ON evaluations (fingerprint, space, status);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', '1');
"""

_COLUMNS = ("space", "key", "fingerprint", "seed", "arch", "status", "metrics", "error", "seconds", "attempts", "transient")

# A stored definitive record wins; only a transient-failure placeholder is replaced.
_PUT = f"""
INSERT INTO evaluations ({", ".join(_COLUMNS)}, created, pid) VALUES ({", ".join("?" * (len(_COLUMNS) + 2))})
ON CONFLICT (space, key, fingerprint, seed) DO UPDATE SET
    arch = excluded.arch, status = excluded.status, metrics = excluded.metrics, error = excluded.error,
    seconds = excluded.seconds, attempts = evaluations.attempts + excluded.attempts,
    transient = excluded.transient, created = excluded.created, pid = excluded.pid
WHERE evaluations.status = 'failed' AND evaluations.transient = 1
"""


def _is_locked(e: sqlite3.OperationalError) -> bool:
    msg = str(e).lower()
    return "locked" in msg or "busy" in msg


class EvaluationStore:
    """SQLite file of :class:`EvalRecord` rows, unique per ``(space, key, fingerprint, seed)``.

    One instance per process is enough; it reopens its connection after a fork so a store can be
    created before worker processes start, and it pickles as its path.

    Args:
        path: the SQLite file (created with its folder if missing; not a directory).
        timeout: seconds to wait for a lock held by another process.

    Raises:
        CheckpointError: the file is a directory, not an evaluation store, or damaged.

    Example:
        >>> store = EvaluationStore("runs/x/evaluations.sqlite")  # doctest: +SKIP
        >>> outcome = evaluate_archs(evaluator, space, archs, store)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike, timeout: float = 60.0):
        self.path = Path(path)
        self.timeout = float(timeout)
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = None
        if self.path.exists() and self.path.is_dir():
            raise CheckpointError(f"evaluation store {self.path} is a directory; give a file path such as {self.path / 'evaluations.sqlite'}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connect()

    # ---- connection ------------------------------------------------------------------------
    def _corrupt(self, e: Exception) -> CheckpointError:
        return CheckpointError(
            f"evaluation store {self.path} is not a readable evaluation store ({e}). If it was "
            f"damaged, move it aside (records in it are lost unless `sqlite3 {self.path} .recover` "
            "salvages them) and rerun: evaluations are then repeated into a fresh store."
        )

    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            conn = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
            self._retry(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            conn.execute("PRAGMA synchronous = FULL")  # a returned put() survives power loss

            def init():
                have = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                if "evaluations" not in have:
                    conn.executescript(_SCHEMA)

            self._retry(init)
            cols = {r[1] for r in conn.execute("PRAGMA table_info(evaluations)")}
            missing = set(_COLUMNS) - cols
            if missing:
                raise CheckpointError(
                    f"{self.path} is an SQLite file but not an evaluation store (table 'evaluations' lacks "
                    f"columns {sorted(missing)}). Point the store at a new file."
                )
            row = conn.execute("SELECT value FROM meta WHERE name='schema_version'").fetchone()
            if row is not None and row[0] != SCHEMA_VERSION:
                raise CheckpointError(f"{self.path} has store schema {row[0]}, this code reads {SCHEMA_VERSION}; use a new file or export and re-import.")
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and _is_locked(e):
                raise
            raise self._corrupt(e) from e
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _retry(self, fn: Callable[[], Any]) -> Any:
        """busy_timeout covers most contention; WAL checkpoints and schema creation can still
        report 'locked' at once, so back off with jitter until ``timeout``."""
        deadline = time.monotonic() + max(self.timeout, _LOCK_RETRY_SECONDS)
        delay = 0.01
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not _is_locked(e) or time.monotonic() > deadline:
                    raise
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.5)

    def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            conn = self._connect()
            try:
                return self._retry(lambda: fn(conn))
            except sqlite3.OperationalError:  # locked past the deadline, disk full, ...: report as is
                raise
            except sqlite3.DatabaseError as e:  # "malformed", "not a database": the file is damaged
                raise self._corrupt(e) from e

    def close(self) -> None:
        """Close this process's connection (the store reconnects on next use)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):  # picklable for process pools: reconnect on the other side
        return {"path": str(self.path), "timeout": self.timeout}

    def __setstate__(self, state):
        self.__init__(state["path"], state["timeout"])

    # ---- rows ------------------------------------------------------------------------------
    @staticmethod
    def _row(rec: EvalRecord) -> tuple:
        return (rec.space, rec.key, rec.fingerprint, int(rec.seed), canonical_json(rec.arch), rec.status,
                canonical_json(rec.metrics), rec.error, float(rec.seconds), int(rec.attempts), int(bool(rec.transient)),
                time.time(), os.getpid())

    @staticmethod
    def _record(row: Sequence) -> EvalRecord:
        space, key, fp, seed, arch, status, metrics, error, seconds, attempts, transient = row
        return EvalRecord(space, key, json.loads(arch), fp, int(seed), status, json.loads(metrics), error,
                          float(seconds), int(attempts), bool(transient))

    def put(self, record: EvalRecord) -> bool:
        """Commit ``record`` durably unless a definitive one is stored already.

        Args:
            record: the record to store.

        Returns:
            True if it was written (new, or replacing a transient placeholder).
        """
        row = self._row(record)

        def go(conn):
            return conn.execute(_PUT, row).rowcount

        return bool(self._run(go))

    def put_many(self, records: Iterable[EvalRecord]) -> int:
        """:meth:`put` for many records in one transaction.

        Args:
            records: the records to store.

        Returns:
            How many were written.
        """
        rows = [self._row(r) for r in records]

        def go(conn):
            conn.execute("BEGIN IMMEDIATE")
            try:
                n = sum(conn.execute(_PUT, r).rowcount for r in rows)
                conn.execute("COMMIT")
                return n
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return int(self._run(go)) if rows else 0

    def get(self, space: str, key: str, fingerprint: str, seed: int = 0) -> EvalRecord | None:
        """The stored record, or None.

        Args:
            space: the space's name.
            key: the record key (``evaluator.record_key(space, arch)``).
            fingerprint: the evaluator's fingerprint.
            seed: evaluation seed.
        """
        sql = f"SELECT {', '.join(_COLUMNS)} FROM evaluations WHERE space=? AND key=? AND fingerprint=? AND seed=?"
        row = self._run(lambda c: c.execute(sql, (space, key, fingerprint, int(seed))).fetchone())
        return None if row is None else self._record(row)

    def get_many(self, space: str, keys: Iterable[str], fingerprint: str, seed: int = 0) -> dict[str, EvalRecord]:
        """Stored records of many keys: ``{key: record}`` for the keys found.

        Args:
            space: the space's name.
            keys: record keys (duplicates are fine).
            fingerprint: the evaluator's fingerprint.
            seed: evaluation seed.
        """
        keys = list(dict.fromkeys(keys))
        out: dict[str, EvalRecord] = {}
        for i in range(0, len(keys), 500):  # SQLite caps bound parameters per statement
            chunk = keys[i:i + 500]
            sql = (f"SELECT {', '.join(_COLUMNS)} FROM evaluations WHERE space=? AND fingerprint=? AND seed=? "
                   f"AND key IN ({', '.join('?' * len(chunk))})")
            rows = self._run(lambda c: c.execute(sql, (space, fingerprint, int(seed), *chunk)).fetchall())
            for row in rows:
                rec = self._record(row)
                out[rec.key] = rec
        return out

    def records(self, space: str | None = None, fingerprint: str | None = None, status: str | None = None,
                seed: int | None = None) -> list[EvalRecord]:
        """Stored records in insertion order, filtered by every argument that is not None.

        Args:
            space: the space's name.
            fingerprint: the evaluator's fingerprint.
            status: ``"ok"`` or ``"failed"``.
            seed: evaluation seed.
        """
        where, args = [], []
        for col, val in (("space", space), ("fingerprint", fingerprint), ("status", status), ("seed", seed)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM evaluations"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        return [self._record(r) for r in self._run(lambda c: c.execute(sql, args).fetchall())]

    def count(self, **filters) -> int:
        """Number of records matching :meth:`records`' filters.

        Args:
            **filters: space, fingerprint, status, seed.
        """
        return len(self.records(**filters))

    def fingerprints(self) -> list[str]:
        """Every evaluator fingerprint with records in the store."""
        return [r[0] for r in self._run(lambda c: c.execute("SELECT DISTINCT fingerprint FROM evaluations").fetchall())]

    def check(self) -> None:
        """Full integrity check (slow on big stores); raises CheckpointError when damaged."""
        res = self._run(lambda c: c.execute("PRAGMA integrity_check").fetchall())
        if [r[0] for r in res] != ["ok"]:
            raise self._corrupt(RuntimeError("; ".join(str(r[0]) for r in res[:5])))

    def to_frame(self, **filters):
        """One row per record; each metric becomes a column (prefixed ``metric_`` only if it would
        clash with a record field). ``arch`` stays a JSON string so any space's encoding fits.

        Args:
            **filters: space, fingerprint, status, seed (as :meth:`records`).
        """
        import pandas as pd

        recs = self.records(**filters)
        base = [c for c in _COLUMNS if c != "metrics"]
        rows = []
        for r in recs:
            d = {c: getattr(r, c) for c in base}
            d["arch"] = canonical_json(r.arch)
            for m, v in r.metrics.items():
                d[f"metric_{m}" if m in base else m] = v
            rows.append(d)
        return pd.DataFrame(rows, columns=None if rows else base)

    def export(self, path: str | os.PathLike, **filters) -> Path:
        """Write records to a file; JSONL keeps ``arch`` and ``metrics`` nested.

        Args:
            path: a ``.parquet``, ``.csv`` or ``.jsonl`` file name.
            **filters: space, fingerprint, status, seed (as :meth:`records`).

        Raises:
            ConfigError: another suffix.
        """
        path = Path(path)
        suffix = path.suffix.lower()
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".jsonl":
            with open(path, "w") as f:
                for r in self.records(**filters):
                    f.write(json.dumps(r.to_dict(), sort_keys=True) + "\n")
        elif suffix == ".csv":
            self.to_frame(**filters).to_csv(path, index=False)
        elif suffix == ".parquet":
            self.to_frame(**filters).to_parquet(path, index=False)
        else:
            raise ConfigError(f"cannot export the evaluation store to {path}: use a .parquet, .csv or .jsonl file name")
        return path

    def __len__(self) -> int:
        return int(self._run(lambda c: c.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]))

    def __repr__(self) -> str:
        return f"EvaluationStore({str(self.path)!r})"


# ---- the evaluation loop ---------------------------------------------------------------------------
@dataclass
class EvaluationOutcome:
    """Records aligned with the input architectures, plus counts over *distinct* keys.

    Attributes:
        records: one record per input architecture (None where it was not reached).
        archs: the parsed input architectures.
        new: keys evaluated by this call.
        reused: keys answered from the store.
        failed: distinct keys whose record is a failure (stored or new).
        noise: per-metric noise reports when ``noise_fraction`` was given.
        fingerprint: the evaluator's fingerprint.
    """

    records: list
    archs: list
    new: int = 0
    reused: int = 0
    failed: int = 0
    noise: dict | None = None
    fingerprint: str = ""
    extra: dict = field(default_factory=dict)

    def ok_records(self, unique: bool = True) -> list[tuple[Any, EvalRecord]]:
        """``(arch, record)`` pairs of the ok records, in input order.

        Args:
            unique: keep only the first architecture of each key.
        """
        out, seen = [], set()
        for a, r in zip(self.archs, self.records):
            if r is None or not r.ok:
                continue
            if unique:
                if r.key in seen:
                    continue
                seen.add(r.key)
            out.append((a, r))
        return out

    def labels(self, target: str | Callable[[dict], float], unique: bool = True) -> tuple[list, np.ndarray]:
        """``(archs, y)`` over ok records only: failed records can never become labels.

        Rows whose target is not finite (e.g. ``log`` of 0) are dropped with a warning.

        Args:
            target: a metric name, an expression (compiled with ``autobuild_core.target``) or a
                callable on the metrics dict.
            unique: one row per key, so isomorphic or repeated architectures cannot sit on both
                sides of a train/validation split.

        Raises:
            ConfigError: the target names a metric the records lack.
        """
        fn = _target_fn(target)
        pairs = self.ok_records(unique=unique)
        archs, ys, dropped = [], [], 0
        for a, r in pairs:
            try:
                y = float(fn(r.metrics))
            except AutoBuildError:  # unknown metric names etc.: the user must hear about it
                raise
            except (ValueError, ZeroDivisionError, OverflowError):  # log(0) and friends: drop the row
                y = float("nan")
            if not np.isfinite(y):
                dropped += 1
                continue
            archs.append(a)
            ys.append(y)
        if dropped:
            import warnings

            warnings.warn(f"labels({target!r}): dropped {dropped} architectures whose target is not finite")
        return archs, np.asarray(ys, dtype=np.float64)

    def summary(self) -> str:
        """One line: architectures, evaluated, reused, failed."""
        return f"{len(self.records)} architectures: {self.new} evaluated, {self.reused} reused, {self.failed} failed"


def _target_fn(target) -> Callable[[dict], float]:
    if callable(target):
        return target
    if not isinstance(target, str):
        raise ConfigError(f"target must be a metric name, an expression or a callable, not {type(target).__name__}")
    if target.isidentifier():
        def get(m: dict) -> float:
            if target not in m:
                from search_spaces.errors import suggest

                raise ConfigError(f"metric {target!r} is not in the evaluation records.{suggest(target, m)} Available: {sorted(m)}")
            return m[target]

        return get
    from autobuild_core.target import compile_target

    return compile_target(target)


def _safe_evaluate(evaluator: Evaluator, space, archs: list, seed: int) -> list[EvalRecord]:
    """Hold evaluators to the contract even when one raises or miscounts: a batch-level exception
    becomes one failed record per architecture."""
    t0 = time.perf_counter()
    try:
        recs = list(evaluator.evaluate(space, archs, seed=seed))
    except TransientEvaluationError as e:
        dt = (time.perf_counter() - t0) / max(len(archs), 1)
        return [evaluator.failed_record(space, a, seed, f"transient: {e}", dt, transient=True) for a in archs]
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:
        dt = (time.perf_counter() - t0) / max(len(archs), 1)
        return [evaluator.failed_record(space, a, seed, f"evaluator raised {type(e).__name__}: {e}", dt) for a in archs]
    if len(recs) != len(archs):
        return [evaluator.failed_record(space, a, seed, f"evaluator returned {len(recs)} records for {len(archs)} architectures")
                for a in archs]
    return recs


def evaluate_archs(
    evaluator: Evaluator,
    space,
    archs: Sequence,
    store: EvaluationStore,
    seed: int = 0,
    retries: int = 2,
    progress: bool = True,
    max_failure_fraction: float | None = None,
    batch_size: int | None = None,
    noise_fraction: float = 0.0,
) -> EvaluationOutcome:
    """Evaluate ``archs``, reusing and filling ``store``.

    Each batch's records are committed before the next batch starts, so a killed run resumes
    where it stopped. Repeated or isomorphic inputs share one record.

    Args:
        evaluator: the :class:`~evaluators.base.Evaluator`.
        space: a search space or its registered name.
        archs: ``Arch`` objects or native encodings (all parsed before anything is evaluated).
        store: the :class:`EvaluationStore` to read and fill.
        seed: evaluation seed.
        retries: extra attempts for transient failures.
        progress: show a progress bar.
        max_failure_fraction: raise :class:`~evaluators.base.EvaluationError` (finished records
            already stored) as soon as failures make this fraction impossible to meet.
        batch_size: architectures per evaluator call (default: the evaluator's ``batch_size``).
        noise_fraction: also evaluate this fraction of the architectures with ``seed + 1``;
            ``outcome.noise`` then holds a :func:`~evaluators.noise.noise_report` per metric.

    Returns:
        An :class:`EvaluationOutcome` aligned with ``archs``.

    Example:
        >>> outcome = evaluate_archs(get_evaluator("nasbench_graph"), "nasbench_graph", archs, store)  # doctest: +SKIP
        >>> archs, y = outcome.labels("acc")  # doctest: +SKIP
    """
    from .base import space_of

    space = space_of(space)
    if retries < 0:
        raise ConfigError(f"retries must be >= 0, got {retries}")
    if max_failure_fraction is not None and not 0.0 <= max_failure_fraction <= 1.0:
        raise ConfigError(f"max_failure_fraction must lie in [0, 1], got {max_failure_fraction}")
    parsed = parse_all(space, archs)
    fp = evaluator.fingerprint()
    keys = [evaluator.record_key(space, a) for a in parsed]
    first: dict[str, Any] = {}
    for k, a in zip(keys, parsed):
        first.setdefault(k, a)
    stored = store.get_many(space.name, first.keys(), fp, seed)
    done: dict[str, EvalRecord] = {k: r for k, r in stored.items() if not (r.status == STATUS_FAILED and r.transient)}
    todo = [k for k in first if k not in done]
    n_unique = len(first)
    reused = n_unique - len(todo)
    failed = sum(1 for r in done.values() if not r.ok)
    new = 0

    def outcome() -> EvaluationOutcome:
        return EvaluationOutcome([done.get(k) for k in keys], list(parsed), new, reused, failed, None, fp)

    limit = None if max_failure_fraction is None else max_failure_fraction * n_unique
    bs = max(1, int(batch_size or evaluator.batch_size or 8))
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"evaluate {evaluator.name}", unit="arch", leave=False, disable=None)
    try:
        for i in range(0, len(todo), bs):
            batch = todo[i:i + bs]
            recs = dict(zip(batch, _safe_evaluate(evaluator, space, [first[k] for k in batch], seed)))
            attempts = {k: 1 for k in batch}
            for _ in range(retries):
                again = [k for k in batch if recs[k].status == STATUS_FAILED and recs[k].transient]
                if not again:
                    break
                for k, r in zip(again, _safe_evaluate(evaluator, space, [first[k] for k in again], seed)):
                    recs[k] = r
                    attempts[k] += 1
            for k in batch:
                r = recs[k]
                if r.key != k:  # the evaluator computed a different key: keep the store consistent
                    r.key = k
                r.attempts = attempts[k]
                if not store.put(r):  # another process stored it first; theirs is the record
                    r = store.get(space.name, k, fp, seed) or r
                done[k] = r
                new += 1
                failed += 0 if r.ok else 1
            if bar is not None:
                bar.update(len(batch))
            if limit is not None and failed > limit:
                reasons = sorted({(r.error or "").splitlines()[0] for r in done.values() if not r.ok})[:3]
                raise EvaluationError(
                    f"{failed} of {n_unique} architectures failed with {evaluator.name!r}, more than the allowed "
                    f"max_failure_fraction={max_failure_fraction}. First reasons: {reasons}. Finished records are "
                    "stored; fix the cause (or raise max_failure_fraction) and rerun to continue.",
                    outcome(),
                )
    finally:
        if bar is not None:
            bar.close()
    res = outcome()
    if noise_fraction and noise_fraction > 0:
        from .noise import measure_noise

        res.noise = measure_noise(evaluator, space, parsed, store, fraction=noise_fraction, seed=seed,
                                  retries=retries, progress=progress)
    return res
