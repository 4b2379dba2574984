"""Training evaluator and image datasets: real (tiny) trainings on CPU, loaders, failure records.

Trainings here use a few hundred Fashion-MNIST images at 16x16 for one epoch: enough to exercise
the whole path (build, optimiser, schedule, evaluation, FLOPs, latency) in seconds, not to learn.
"""

from __future__ import annotations

import gzip
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from search_spaces import get_space
from search_spaces.errors import AutoBuildError, UnknownNameError
from evaluators.datasets import (
    DatasetError,
    fashion_mnist_dir,
    load_dataset,
    parse_dataset,
    read_idx,
    restricted_load,
)
from evaluators.training import BUDGETS, METRIC_UNITS, TrainingEvaluator

TINY = dict(epochs=1, n_train=192, n_val=64, n_test=64, batch_size=32, resolution=16, device="cpu", progress=False)
ALL_METRICS = {"val_acc", "test_acc", "train_seconds", "params", "flops", "latency_b1_ms", "latency_b64_ms"}


from training_support import needs_fmnist, one_thread  # noqa: F401 (one_thread is an autouse fixture)


# ---- real trainings ----------------------------------------------------------------------------


@needs_fmnist
@pytest.mark.parametrize("space_name", ["ofa_mbv3", "nb201"])
def test_tiny_training_gives_finite_metrics(space_name):
    space = get_space(space_name)
    ev = TrainingEvaluator(**TINY)
    arch = space.sample(1, seed=3)[0]
    (rec,) = ev.evaluate(space, [arch], seed=0)
    assert rec.status == "ok", rec.error
    assert set(rec.metrics) == ALL_METRICS <= set(METRIC_UNITS)
    assert all(math.isfinite(v) for v in rec.metrics.values())
    assert 0 <= rec.metrics["val_acc"] <= 100 and 0 <= rec.metrics["test_acc"] <= 100
    assert rec.metrics["params"] > 0 and rec.metrics["flops"] > 0 and rec.metrics["latency_b1_ms"] > 0
    assert rec.fingerprint == ev.fingerprint() and rec.key == space.key(arch)


@needs_fmnist
def test_deterministic_on_cpu():
    space = get_space("nb201")
    ev = TrainingEvaluator(**{**TINY, "latency": False})
    arch = space.sample(1, seed=5)[0]
    a = ev.evaluate(space, [arch], seed=7)[0]
    b = ev.evaluate(space, [arch], seed=7)[0]
    assert a.ok and b.ok
    assert a.metrics["val_acc"] == b.metrics["val_acc"]
    assert a.metrics["test_acc"] == b.metrics["test_acc"]


# ---- failures are records ----------------------------------------------------------------------


class _NaNNet(nn.Module):
    def __init__(self, in_chans, num_classes):
        super().__init__()
        self.fc = nn.Linear(in_chans, num_classes)

    def forward(self, x):
        return self.fc(x.mean((2, 3))) * float("nan")


class _Toy:
    """A stand-in space whose network is chosen by the test (NaN outputs, slow, ...)."""

    name = "toy"

    def __init__(self, make):
        self.make = make

    def parse(self, obj):
        from search_spaces.base import Arch

        return Arch.make([[[int(obj)]]])

    def format(self, arch):
        return arch.units[0][0][0]

    def key(self, arch):
        return str(self.format(arch))

    def build_model(self, arch, num_classes=10, in_chans=3, resolution=None):
        return self.make(in_chans, num_classes)


def _fake_data(monkeypatch, n=64):
    from evaluators import training
    from evaluators.datasets import ImageData

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 12, 12), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    data = ImageData("fake", x, y, x[:16], y[:16], x[:16], y[:16], 3, (0.5,), (0.25,))
    monkeypatch.setattr(training.TrainingEvaluator, "data", lambda self: data)


def test_nan_model_gives_diverged_record(monkeypatch):
    _fake_data(monkeypatch)
    ev = TrainingEvaluator(epochs=1, batch_size=16, device="cpu", progress=False, latency=False)
    (rec,) = ev.evaluate(_Toy(_NaNNet), [1], seed=0)
    assert rec.status == "failed" and rec.error.startswith("diverged")
    assert not rec.transient and rec.metrics == {}


def test_timeout_and_oom_are_records(monkeypatch):
    _fake_data(monkeypatch)

    class Slow(nn.Module):
        def __init__(self, c, k):
            super().__init__()
            self.fc = nn.Linear(c, k)

        def forward(self, x):
            import time

            time.sleep(0.05)
            return self.fc(x.mean((2, 3)))

    ev = TrainingEvaluator(epochs=3, batch_size=16, device="cpu", progress=False, latency=False, timeout_s=0.1)
    (rec,) = ev.evaluate(_Toy(Slow), [1])
    assert rec.status == "failed" and rec.error.startswith("timeout") and not rec.transient

    class OOM(Slow):
        def forward(self, x):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 PiB")

    (rec,) = TrainingEvaluator(epochs=1, batch_size=16, device="cpu", progress=False).evaluate(_Toy(OOM), [2])
    assert rec.status == "failed" and rec.error == "out of memory" and rec.transient


def test_settings_and_budgets():
    ev = TrainingEvaluator.from_budget("smoke", device="cpu", progress=False)
    s = ev.settings()
    assert s["device_type"] == "cpu" and s["precision"] == "fp32" and s["n_train"] == BUDGETS["smoke"]["n_train"]
    for k in ("trainings_per_gpu", "timeout_s", "progress", "device"):
        assert k not in s
    # settings that do not change results leave the fingerprint alone; those that do change it
    same = TrainingEvaluator.from_budget("smoke", device="cpu", progress=True, timeout_s=5, trainings_per_gpu=3)
    assert same.fingerprint() == ev.fingerprint()
    assert TrainingEvaluator.from_budget("smoke", device="cpu", epochs=BUDGETS["smoke"]["epochs"] + 1).fingerprint() != ev.fingerprint()
    assert TrainingEvaluator(**TrainingEvaluator.from_budget("smoke", device="cpu").config()).fingerprint() == ev.fingerprint()
    assert TrainingEvaluator.from_budget("smoke", device="cpu", threads=3).settings()["cpu_threads"] == 3
    with pytest.raises(UnknownNameError, match="smoke"):
        TrainingEvaluator.from_budget("smok")
    with pytest.raises(AutoBuildError, match="amp"):
        TrainingEvaluator(amp="fp8", device="cpu")


def test_registry_builds_training_evaluator():
    from evaluators.base import get_evaluator

    ev = get_evaluator("train", device="cpu", epochs=2)
    assert isinstance(ev, TrainingEvaluator) and ev.settings()["epochs"] == 2


# ---- precision probe and GPU slots -------------------------------------------------------------


def test_cpu_precision_is_fp32_with_reason_and_the_choice_keys_the_fingerprint(monkeypatch):
    from evaluators import training

    ev = TrainingEvaluator(**TINY)
    choice = ev.precision_choice()
    assert (choice.precision, choice.channels_last, choice.source) == ("fp32", False, "cpu") and "CPU" in choice.reason
    assert ev.describe()["precision_choice"]["source"] == "cpu"
    # a probe that picks bf16 + channels-last gives another fingerprint, recorded in the settings
    probed = training.PrecisionChoice("bf16", True, "probe", "measured (test)", {"fp32": 1.0, "bf16_cl": 2.0})
    monkeypatch.setattr(training, "choose_precision", lambda *a, **k: probed)
    ev2 = TrainingEvaluator(**TINY)
    s2 = ev2.settings()
    assert s2["precision"] == "bf16" and s2["channels_last"] is True and ev2.fingerprint() != ev.fingerprint()
    monkeypatch.undo()
    # the choice, not how it was reached, keys records: forcing the same choice shares them
    forced = TrainingEvaluator(**{**TINY, "amp": "bf16", "channels_last": True})
    assert forced.precision_choice().source == "forced" and forced.fingerprint() == ev2.fingerprint()
    assert TrainingEvaluator(**{**TINY, **probed.settings()}).fingerprint() == ev2.fingerprint()


def test_probe_measures_candidates_and_caches_them_in_the_table(tmp_path):
    from evaluators.training import AUTO_CANDIDATES, choose_precision, pick_precision

    get_space("nb201")
    table = tmp_path / "precision.json"
    kw = dict(probe_space="nb201", batch_size=8, resolution=8, table=table, probe_on_cpu=True, n_models=1, steps=1)
    first = choose_precision(torch.device("cpu"), **kw)
    assert first.source == "probe" and set(first.measured) == set(AUTO_CANDIDATES)
    assert all(v > 0 for v in first.measured.values()) and first.candidate == pick_precision(first.measured)
    again = choose_precision(torch.device("cpu"), **kw)  # another worker: reads the table, same choice
    assert again.source == "table" and again.candidate == first.candidate and str(table) in again.reason
    assert pick_precision({"fp32": 100.0, "bf16_cl": 103.0}) == "fp32"  # within the margin: fp32
    assert pick_precision({"fp32": 100.0, "bf16_cl": 150.0}) == "bf16_cl"
    assert pick_precision({"fp32": 100.0, "bf16_cl": 50.0}) == "fp32"


def _hold(folder, slots, log, hold_s, start=None):
    import os
    import time

    from evaluators.training import hold_slot

    if start is not None:
        start.wait(30)  # all processes contend at once, however staggered their start was
    with hold_slot(folder, "gpu-test", slots, poll_s=0.02) as k:
        t0 = time.time()
        time.sleep(hold_s)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {k} {t0} {time.time()}\n")


def test_slots_cap_concurrent_trainings_across_processes(tmp_path):
    """The per-GPU semaphore (trainings_per_gpu) is device-independent: 5 processes, 2 slots."""
    import multiprocessing as mp

    log = tmp_path / "log.txt"
    ctx = mp.get_context("fork")
    start = ctx.Barrier(5)
    procs = [ctx.Process(target=_hold, args=(tmp_path / "slots", 2, log, 1.0, start)) for _ in range(5)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    spans = [tuple(map(float, ln.split()[2:])) for ln in log.read_text().splitlines()]
    assert len(spans) == 5
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans], key=lambda e: (e[0], e[1]))
    live = peak = 0
    for _, d in events:
        live += d
        peak = max(peak, live)
    assert peak == 2


def test_trainings_per_gpu_defaults_to_the_worker_machine_setting(monkeypatch):
    monkeypatch.setenv("AUTOBUILD_TRAININGS_PER_GPU", "6")
    ev = TrainingEvaluator(device="cpu", progress=False)
    assert ev.trainings_per_gpu == 6 and ev.config()["trainings_per_gpu"] == 6
    assert TrainingEvaluator(device="cpu", trainings_per_gpu=2).trainings_per_gpu == 2
    monkeypatch.setenv("AUTOBUILD_TRAININGS_PER_GPU", "many")
    with pytest.raises(AutoBuildError, match="AUTOBUILD_TRAININGS_PER_GPU"):
        TrainingEvaluator(device="cpu")
    monkeypatch.delenv("AUTOBUILD_TRAININGS_PER_GPU")
    assert TrainingEvaluator(device="cpu").trainings_per_gpu == 1


# ---- datasets ----------------------------------------------------------------------------------


def _write_idx(path: Path, arr: np.ndarray, gz: bool):
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(raw)


def test_idx_folder_loader(tmp_path):
    rng = np.random.default_rng(0)
    tr_x = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    tr_y = np.arange(40, dtype=np.uint8) % 4
    te_x = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)
    te_y = np.arange(12, dtype=np.uint8) % 4
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", tr_x, gz=True)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", tr_y, gz=False)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", te_x, gz=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", te_y, gz=True)
    assert np.array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), tr_x)

    d = load_dataset(f"idx:{tmp_path}", n_train=20, n_val=10, split_seed=1)
    assert d.sizes() == {"train": 20, "val": 10, "test": 12}
    assert d.train_x.shape == (20, 1, 8, 8) and d.train_x.dtype == torch.uint8
    assert d.num_classes == 4 and d.in_chans == 1 and d.resolution == 8
    # train and val are disjoint pieces of the training file
    rows = {bytes(r) for r in tr_x.reshape(40, -1)}
    tv = [bytes(r) for r in torch.cat([d.train_x, d.val_x]).reshape(30, -1).numpy()]
    assert len(set(tv)) == 30 and set(tv) <= rows
    # the same split seed gives the same split; a larger n_train extends the smaller one
    d2 = load_dataset(f"idx:{tmp_path}", n_train=25, n_val=10, split_seed=1)
    assert torch.equal(d2.train_x[:20], d.train_x) and torch.equal(d2.val_x, d.val_x)
    z = d.normalize(d.train_x)
    assert z.dtype == torch.float32 and abs(float(z.mean())) < 0.5

    # a moved copy is the same dataset; changed content is not
    import shutil

    from evaluators.datasets import dataset_fingerprint

    shutil.copytree(tmp_path, tmp_path.parent / (tmp_path.name + "_moved"))
    fp = dataset_fingerprint(f"idx:{tmp_path}")
    assert fp.startswith("idx:sha256=") and fp == dataset_fingerprint(f"idx:{tmp_path.parent / (tmp_path.name + '_moved')}")
    assert TrainingEvaluator(dataset=f"idx:{tmp_path}", device="cpu").settings()["dataset"] == fp

    with pytest.raises(DatasetError, match="n_train=100"):
        load_dataset(f"idx:{tmp_path}", n_train=100, n_val=10)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 2, 2, 2) + b"\x00")
    with pytest.raises(DatasetError, match="lacks"):
        load_dataset(f"idx:{tmp_path / 'bad'}")
    with pytest.raises(DatasetError, match="declares shape"):
        read_idx(tmp_path / "bad" / "train-images-idx3-ubyte")


def test_bad_dataset_names(tmp_path):
    with pytest.raises(UnknownNameError, match="fashion-mnist"):
        parse_dataset("fashon-mnist")
    with pytest.raises(UnknownNameError, match="Known datasets"):
        load_dataset("mnistt:/x")
    with pytest.raises(DatasetError, match="idx:/path"):
        parse_dataset("idx:")
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"idx:{tmp_path / 'nope'}")
    with pytest.raises(AutoBuildError):
        TrainingEvaluator(dataset="cifar100", device="cpu")


def test_fashion_mnist_missing_message(monkeypatch, tmp_path):
    from evaluators import datasets

    monkeypatch.setattr(datasets, "FASHION_MNIST_DIRS", (str(tmp_path),))
    monkeypatch.setattr(datasets, "_dpkg_listed_dirs", lambda package: [])
    monkeypatch.delenv("AUTOBUILD_FASHION_MNIST", raising=False)
    with pytest.raises(DatasetError, match="make setup.*apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist_dir()


def test_cifar10_folder_and_restricted_unpickler(tmp_path):
    rng = np.random.default_rng(0)
    for i in (1, 2):
        batch = {b"data": rng.integers(0, 256, (6, 3 * 4 * 4), dtype=np.uint8), b"labels": [j % 3 for j in range(6)]}
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": rng.integers(0, 256, (4, 48), dtype=np.uint8), b"labels": [0, 1, 2, 0]}))
    d = load_dataset(f"cifar10:{tmp_path}", n_val=2)
    assert d.train_x.shape == (10, 3, 4, 4) and d.sizes()["test"] == 4 and d.num_classes == 3

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        restricted_load(pickle.dumps(Evil()))
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(Evil()))
    from evaluators import datasets

    datasets._raw.cache_clear()
    with pytest.raises(DatasetError, match="refusing"):
        load_dataset(f"cifar10:{tmp_path}")


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(tmp_path / split / cls / f"{i}.png")
    d = load_dataset(f"imagefolder:{tmp_path}", n_val=2)
    assert d.train_x.shape == (6, 3, 6, 6) and d.sizes()["test"] == 4 and d.classes == ["cat", "dog"]


@needs_fmnist
def test_bench_train_summary(tmp_path):
    """`autobuild bench train` end to end in-process (one worker), JSON fields present."""
    get_space("nb201")
    import json

    from autobuild_cli.main import main

    out = tmp_path / "bench.json"
    rc = main(["bench", "train", "--space", "nb201", "--archs", "1", "--epochs", "1", "--n-train", "128", "--n-val", "64",
               "--n-test", "64", "--resolution", "16", "--device", "cpu", "--threads", "1", "--no-latency", "--quiet", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    for k in ("archs_per_hour", "seconds_per_arch", "device", "val_acc", "test_acc", "n_archs", "settings"):
        assert k in res
    assert res["n_ok"] == 1 and res["device"].startswith("cpu") and res["settings"]["n_train"] == 128
    assert set(res["test_acc"]) >= {"mean", "sd", "min", "max"}


@needs_fmnist
def test_bench_train_reports_gpu_figures_and_calibration(tmp_path):
    """`--calibrate` adds the calibration's ceiling; GPU figures read 'n/a' on CPU."""
    get_space("nb201")
    import json

    from autobuild_cli.main import main

    out = tmp_path / "bench.json"
    rc = main(["bench", "train", "--space", "nb201", "--archs", "1", "--epochs", "1", "--n-train", "64", "--n-val", "64",
               "--n-test", "32", "--resolution", "16", "--device", "cpu", "--threads", "1", "--no-latency", "--quiet",
               "--calibrate", "--calib-budgets", "1x64", "--calib-n-archs", "4", "--calib-threshold", "0.1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["gpu"]["utilisation_mean"] == "n/a" and res["gpu"]["max_memory_allocated_mib"] == "n/a"
    assert res["precision_choice"]["source"] == "cpu"
    cal = res["calibration"]
    assert cal["status"] in ("chosen", "no_budget_ranks") and [b["budget"] for b in cal["budgets"]] == ["1x64"]
    assert (tmp_path / "bench.calibration.sqlite").exists()
