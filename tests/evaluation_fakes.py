"""Test doubles for the evaluation tests (not collected by pytest: no ``test_`` prefix).

``FakeSpace`` is duck-typed on purpose: worker subprocesses import only this module and
``evaluators``, not torch, so multi-process tests start in well under a second.
Run as a script it is the worker of the kill and concurrency tests.
"""

from __future__ import annotations

import json
import os
import sys
import time

from search_spaces.errors import EncodingError
from evaluators import Evaluator, TransientEvaluationError


class FakeSpace:
    """Architectures are the integers 0..999; ``n`` and ``n + 1000`` would be "isomorphic" if
    allowed, so ``key`` is the value modulo 1000 (keeps key != encoding handling honest)."""

    name = "fake"

    def parse(self, obj):
        if isinstance(obj, bool) or not isinstance(obj, (int, str)):
            raise EncodingError(f"fake: cannot parse {obj!r}")
        try:
            n = int(obj)
        except ValueError as e:
            raise EncodingError(f"fake: cannot parse {obj!r}") from e
        if not 0 <= n < 2000:
            raise EncodingError(f"fake: {n} out of range")
        return n

    def format(self, arch):
        return int(arch)

    def key(self, arch):
        return f"k{int(arch) % 1000}"

    def sample(self, n, seed=0):
        return list(range(n))


def true_acc(n: int, seed: int = 0) -> float:
    return 50.0 + (n * 7919 % 100) / 10.0 + 0.01 * seed


class FakeEvaluator(Evaluator):
    """Deterministic metrics; optional delay, a log of every evaluation (one line per call, for
    counting across processes), permanent failures, transient failures and NaN results. Only
    ``settings`` enters the fingerprint, so a slow and a fast instance share stored records."""

    name = "fake"
    metric_units = {"acc": "%", "lat": "ms"}

    def __init__(self, delay=0.0, log_path=None, fail=(), transient=None, nan=(), batch_size=4):
        self.delay, self.log_path = delay, log_path
        self.fail, self.nan = set(fail), set(nan)
        self.transient = dict(transient or {})  # arch -> how many times to fail transiently first
        self.calls: list[tuple[int, int]] = []
        self.batch_size = batch_size

    def settings(self):
        return {"formula": 1}

    def evaluate_one(self, space, arch, seed=0):
        n = int(arch)
        self.calls.append((n, seed))
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(f"{n} {seed} {os.getpid()}\n")
        if self.delay:
            time.sleep(self.delay)
        if self.transient.get(n, 0) > 0:
            self.transient[n] -= 1
            raise TransientEvaluationError("device busy")
        if n in self.fail:
            raise RuntimeError(f"arch {n} diverged")
        if n in self.nan:
            return {"acc": float("nan"), "lat": 1.0}
        return {"acc": true_acc(n, seed), "lat": float(n + 1)}


def _main(argv):
    """worker: store log delay archs_json [seed]"""
    from evaluators import EvaluationStore, evaluate_archs

    store_path, log_path, delay, archs = argv[0], argv[1], float(argv[2]), json.loads(argv[3])
    seed = int(argv[4]) if len(argv) > 4 else 0
    store = EvaluationStore(store_path)
    ev = FakeEvaluator(delay=delay, log_path=log_path, batch_size=1)
    out = evaluate_archs(ev, FakeSpace(), archs, store, seed=seed, progress=False)
    print(json.dumps({"new": out.new, "reused": out.reused, "failed": out.failed}))


if __name__ == "__main__":
    _main(sys.argv[1:])
