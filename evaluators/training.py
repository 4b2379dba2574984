"""Evaluate architectures by actually training them (proxy training on a small image dataset).

The dataset lives on the device as tensors (no DataLoader), the recipe comes from timm, failures
(OOM, divergence, timeout) are failed records rather than exceptions, precision and memory format
are measured per device, ``settings()`` holds everything that changes a metric (it keys stored
results), and ``trainings_per_gpu`` is a cross-process ``flock`` semaphore per physical GPU.
Why each choice was made: docs/training.md, "The training evaluator's design".
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from search_spaces.errors import ConfigError, UnknownNameError
from evaluators.base import EvalRecord, Evaluator, to_arch
from evaluators.datasets import ImageData, dataset_fingerprint, load_dataset, parse_dataset

METRIC_UNITS = {
    "val_acc": "%",
    "test_acc": "%",
    "train_seconds": "s",
    "params": "count",
    "flops": "FLOPs",
    "latency_b1_ms": "ms",
    "latency_b64_ms": "ms",
}

# Budget presets. Noise figures are documented in docs/training.md where they were measured.
BUDGETS: dict[str, dict[str, Any]] = {
    # Tens of seconds per architecture on one CPU core; pipelines end to end and quick looks.
    "smoke": dict(epochs=2, n_train=2000, n_val=1000, n_test=1000, batch_size=64, lr=5e-3, warmup_epochs=0, augment="none"),
    # A minute or so per architecture on one GPU share.
    "fast": dict(epochs=5, n_train=10000, n_val=5000, n_test=10000, batch_size=128, lr=2e-3, warmup_epochs=1, augment="flip_crop"),
    # Full training split; the proxy the ranker is meant to be trained on (noise measured on GPU).
    "standard": dict(epochs=20, n_train=None, n_val=5000, n_test=None, batch_size=256, lr=2e-3, warmup_epochs=2, augment="flip_crop"),
}

_AMP = {"auto", "bf16", "fp16", "off"}
_AUGMENT = {"none", "flip", "flip_crop"}


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cuda:N"`` and ``"cpu"`` are taken literally."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r} ({e}).") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} was requested but CUDA is not available on this machine; use device='cpu' or 'auto'.")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}.")
    return dev


def device_name(dev: torch.device) -> str:
    """``"cuda:<GPU model>"`` or ``"cpu:<CPU model>"``: what latency numbers are comparable across."""
    if dev.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(dev)}"
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    if not model:
        import platform

        model = platform.processor() or platform.machine()
    return f"cpu:{model}"


# ---------------------------------------------------------------------------------------------
# GPU slots


def slot_dir(lock_dir: str | os.PathLike | None = None) -> Path:
    """Folder of the per-GPU slot lock files: ``lock_dir``, else ``$AUTOBUILD_LOCK_DIR``, else the
    temp dir, plus ``autobuild-gpu-slots``."""
    return Path(lock_dir or os.environ.get("AUTOBUILD_LOCK_DIR") or tempfile.gettempdir()) / "autobuild-gpu-slots"


@contextlib.contextmanager
def hold_slot(folder: str | os.PathLike, name: str, slots: int, poll_s: float = 0.5):
    """Hold one of ``slots`` ``flock`` lock files ``folder/name.K.lock`` until the block ends.

    Args:
        folder: where the lock files live (created if missing).
        name: what the slots are shared over (a GPU's UUID).
        slots: how many holders may be inside at once, machine-wide.
        poll_s: seconds between attempts while every slot is taken.

    Yields the slot index. The kernel releases a slot when its process exits, even on a crash.
    Device-independent, so the semaphore is tested on CPU.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for k in range(slots):
            fh = open(folder / f"{name}.{k}.lock", "a+")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            try:
                yield k
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
                fh.close()
            return
        time.sleep(poll_s)


@contextlib.contextmanager
def gpu_slot(dev: torch.device, slots: int, lock_dir: str | None = None, poll_s: float = 0.5):
    """Hold one of ``slots`` per-GPU lock files for the duration of a training (see module doc);
    a no-op on CPU."""
    if dev.type != "cuda" or not slots or slots < 1:
        yield None
        return
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    gpu_id = str(torch.cuda.get_device_properties(index).uuid)
    with hold_slot(slot_dir(lock_dir), gpu_id, slots, poll_s) as k:
        yield k


def default_trainings_per_gpu() -> int:
    """``$AUTOBUILD_TRAININGS_PER_GPU`` (set on a GPU worker machine), else 1."""
    raw = os.environ.get("AUTOBUILD_TRAININGS_PER_GPU", "").strip()
    if not raw:
        return 1
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"AUTOBUILD_TRAININGS_PER_GPU must be a positive integer, got {raw!r}.") from None


# ---------------------------------------------------------------------------------------------
# data on the device


@lru_cache(maxsize=2)
def _dataset(dataset: str, n_train, n_val, n_test, split_seed: int) -> ImageData:
    return load_dataset(dataset, n_train=n_train, n_val=n_val, n_test=n_test, split_seed=split_seed)


_PLACED: dict = {}


def _placed(data: ImageData, dev: torch.device) -> ImageData:
    """The dataset on ``dev`` when it fits in a quarter of free memory, else pinned on the host.
    Cached per process so consecutive architectures in one worker reuse the copy."""
    key = (id(data), str(dev))
    if key in _PLACED:
        return _PLACED[key][1]
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        placed = data.to(dev) if data.nbytes() < free // 4 else _pinned(data)
    else:
        placed = data
    _PLACED.clear()  # one placed dataset per process is enough; free the previous copy
    _PLACED[key] = (data, placed)  # keep `data` alive so id() stays unique
    return placed


def _pinned(data: ImageData) -> ImageData:
    d = data.to("cpu")
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        setattr(d, name, getattr(d, name).pin_memory())
    return d


def _augment(x: torch.Tensor, mode: str, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Per-sample horizontal flip and random translation (zero padding) on a uint8/float batch."""
    if mode == "none":
        return x
    b, c, h, w = x.shape
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    x = torch.where(flip.view(b, 1, 1, 1), x.flip(3), x)
    if mode == "flip_crop":
        xp = F.pad(x, (pad, pad, pad, pad))
        oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        bi = torch.arange(b, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        x = xp[bi, ci, rows, cols]
    return x


# ---------------------------------------------------------------------------------------------
# measurement helpers


class TrainingFailed(Exception):
    """Internal: ends one training with a failed record (message, transient)."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("out of memory" in msg.lower() or "can't allocate memory" in msg)


def count_flops(model: torch.nn.Module, in_chans: int, resolution: int) -> int:
    """Forward FLOPs at batch size 1 (``torch.utils.flop_counter``), on the model's device."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(model.parameters(), None)
    x = torch.zeros(1, in_chans, resolution, resolution, device=p.device if p is not None else "cpu")
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    model.train(was_training)
    return int(fc.get_total_flops())


def measure_latency(model, in_chans: int, resolution: int, batch: int, dev: torch.device, autocast_ctx, channels_last: bool,
                    warmup: int | None = None, repeats: int | None = None) -> float:
    """Median forward time in ms on ``dev`` after warm-up; CUDA work is synchronised per call."""
    cuda = dev.type == "cuda"
    warmup = warmup if warmup is not None else (10 if cuda else 1)
    repeats = repeats if repeats is not None else (30 if cuda else 5)
    x = torch.randn(batch, in_chans, resolution, resolution, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model.eval()
    times = []
    with torch.inference_mode(), autocast_ctx():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize(dev)
            t = time.perf_counter()
            model(x)
            if cuda:
                torch.cuda.synchronize(dev)
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1000.0)
    return float(statistics.median(times))


# ---------------------------------------------------------------------------------------------
# precision and memory format: measured per device

#: candidate name -> (autocast dtype or None, channels_last)
PRECISION_CANDIDATES: dict[str, tuple[torch.dtype | None, bool]] = {
    "fp32": (None, False),
    "bf16_cl": (torch.bfloat16, True),
    "fp32_cl": (None, True),
    "bf16": (torch.bfloat16, False),
}
#: what ``amp="auto"`` chooses between
AUTO_CANDIDATES = ("fp32", "bf16_cl")
#: bf16 must be this much faster to be chosen over fp32 (fp32 is the numerically safer default)
PROBE_MARGIN = 1.05
_DTYPE_NAME = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision and memory format trainings use, and why.

    ``source``: ``forced`` (given in the settings), ``cpu`` (probe skipped on CPU), ``probe``
    (measured now) or ``table`` (measured earlier on this device, read from the table).
    ``measured``: training samples per second of each probed candidate.
    """

    precision: str
    channels_last: bool
    source: str
    reason: str
    measured: dict | None = None

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    @property
    def candidate(self) -> str:
        return self.precision + ("_cl" if self.channels_last else "")

    def to_dict(self) -> dict:
        return {"precision": self.precision, "channels_last": self.channels_last, "source": self.source,
                "reason": self.reason, "measured": dict(self.measured) if self.measured else None}

    def settings(self) -> dict:
        """Evaluator settings that force this choice (``amp``, ``channels_last``)."""
        return {"amp": "off" if self.precision == "fp32" else self.precision, "channels_last": self.channels_last}


def probe_precision(models: Sequence[torch.nn.Module], dev: torch.device, in_chans: int, resolution: int,
                    num_classes: int = 10, batch_size: int = 256, steps: int = 5, warmup: int = 2,
                    candidates: Sequence[str] = AUTO_CANDIDATES) -> dict[str, float]:
    """Training samples per second of each candidate, over ``models`` (a few steps each).

    Args:
        models: networks to time (copied per candidate; the originals are left untouched).
        dev: the device to time on.
        in_chans, resolution, num_classes: input and output shape of the networks.
        batch_size: images per step (the training batch size).
        steps: timed optimiser steps per network and candidate.
        warmup: untimed steps first (cuDNN autotuning, allocator).
        candidates: names from :data:`PRECISION_CANDIDATES`.
    """
    import copy

    cuda = dev.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch_size, in_chans, resolution, resolution, generator=g).to(dev)
    y = torch.randint(0, num_classes, (batch_size,), generator=g).to(dev)
    totals = {c: 0.0 for c in candidates}
    for model in models:
        for c in candidates:
            if c not in PRECISION_CANDIDATES:
                raise UnknownNameError("precision candidate", c, PRECISION_CANDIDATES)
            dtype, cl = PRECISION_CANDIDATES[c]
            m = copy.deepcopy(model).to(dev)
            x = x0
            if cl:
                m = m.to(memory_format=torch.channels_last)
                x = x0.contiguous(memory_format=torch.channels_last)
            m.train()
            opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
            ctx = (lambda: torch.autocast(device_type=dev.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
            t = 0.0
            for i in range(warmup + steps):
                if cuda:
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                with ctx():
                    loss = F.cross_entropy(m(x).float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if cuda:
                    torch.cuda.synchronize(dev)
                if i >= warmup:
                    t += time.perf_counter() - t0
            totals[c] += t
            del m, opt
    n = batch_size * steps * max(1, len(models))
    return {c: (n / t if t > 0 else float("inf")) for c, t in totals.items()}


def pick_precision(measured: dict[str, float], margin: float = PROBE_MARGIN) -> str:
    """The fastest candidate; a reduced-precision one only when it beats fp32 by ``margin``."""
    best = max(measured, key=measured.get)
    if "fp32" in measured and best != "fp32" and not measured[best] >= margin * measured["fp32"]:
        return "fp32"
    return best


def precision_table_path() -> Path:
    """``$AUTOBUILD_PRECISION_TABLE``, else ``~/.cache/autobuild/precision_table.json``."""
    env = os.environ.get("AUTOBUILD_PRECISION_TABLE")
    return Path(env) if env else Path.home() / ".cache" / "autobuild" / "precision_table.json"


def _read_table(path: Path) -> dict:
    import json

    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def choose_precision(dev: torch.device, amp: str = "auto", channels_last: str | bool = "auto", probe_space: str = "ofa_mbv3",
                     batch_size: int = 256, resolution: int = 28, in_chans: int = 1, num_classes: int = 10,
                     table: str | os.PathLike | None = None, probe_on_cpu: bool = False, n_models: int = 2,
                     steps: int = 5) -> PrecisionChoice:
    """Resolve ``amp``/``channels_last`` for ``dev``: forced, CPU default, table entry or a new probe.

    Args:
        dev: the training device.
        amp: ``"auto"`` (measure), ``"off"``, ``"bf16"`` or ``"fp16"`` (forced).
        channels_last: ``"auto"`` (measure) or a bool (forced).
        probe_space: search space whose sampled networks (``n_models`` of them) the probe trains.
        batch_size, resolution, in_chans, num_classes: the training shapes to time.
        table: JSON file of earlier probes keyed by device, torch version, space and shapes
            (default :func:`precision_table_path`); written under a lock so the workers of one
            machine probe once and agree.
        probe_on_cpu: probe on CPU too instead of choosing fp32 NCHW at once.
        n_models, steps: networks probed and timed steps per network and candidate.
    """
    if amp != "auto" or channels_last != "auto":
        dtype = None
        if amp == "bf16" or (amp == "auto" and dev.type == "cuda"):
            dtype = torch.bfloat16
        elif amp == "fp16":
            dtype = torch.float16
        cl = (dev.type == "cuda" and dtype is not None) if channels_last == "auto" else bool(channels_last)
        return PrecisionChoice(_DTYPE_NAME[dtype], cl, "forced", f"set in the evaluator settings (amp={amp!r}, channels_last={channels_last!r})")
    if dev.type == "cpu" and not probe_on_cpu:
        return PrecisionChoice("fp32", False, "cpu", "CPU: fp32 NCHW without probing (bf16 autocast is emulated on most CPUs); "
                               "set amp/channels_last to force another choice")
    key = f"{device_name(dev)}|torch {torch.__version__}|{probe_space}|b{batch_size}|r{resolution}|c{in_chans}"
    path = Path(table) if table else precision_table_path()
    entry = _read_table(path).get(key)
    if not entry:
        path.parent.mkdir(parents=True, exist_ok=True)
        with hold_slot(path.parent, path.name + ".probe", 1, poll_s=0.2):  # one prober per machine
            entry = _read_table(path).get(key)
            if not entry:
                from search_spaces import get_space

                space = get_space(probe_space)
                models = [space.build_model(a, num_classes=num_classes, in_chans=in_chans, resolution=resolution)
                          for a in space.sample(n_models, seed=0, stratified=True)]
                measured = probe_precision(models, dev, in_chans, resolution, num_classes, batch_size, steps=steps)
                entry = {"choice": pick_precision(measured), "measured": measured, "created": time.time()}
                import json

                data = _read_table(path)
                data[key] = entry
                tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
                os.replace(tmp, path)
                dtype, cl = PRECISION_CANDIDATES[entry["choice"]]
                return PrecisionChoice(_DTYPE_NAME[dtype], cl, "probe", _probe_reason(entry, probe_space), measured)
    dtype, cl = PRECISION_CANDIDATES[entry["choice"]]
    return PrecisionChoice(_DTYPE_NAME[dtype], cl, "table", _probe_reason(entry, probe_space) + f" (from {path})", entry.get("measured"))


def _probe_reason(entry: dict, space: str) -> str:
    m = entry.get("measured") or {}
    figures = ", ".join(f"{c} {v:.0f} img/s" for c, v in m.items())
    return f"measured on {space} networks: {figures}; chose {entry['choice']}"


# ---------------------------------------------------------------------------------------------


@dataclass
class _Resolved:
    dev: torch.device
    choice: PrecisionChoice | None = None  # resolved on first use (a CUDA probe costs seconds)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return self.choice.amp_dtype

    @property
    def channels_last(self) -> bool:
        return self.choice.channels_last


class TrainingEvaluator(Evaluator):
    """Trains each architecture from scratch with one recipe and reports accuracy, cost and speed.

    Build one from a preset with :meth:`from_budget` (``"smoke"``, ``"fast"``, ``"standard"``) and
    override single settings by keyword. Constructor arguments that do not change results
    (``device`` index, ``trainings_per_gpu``, ``timeout_s``, ``progress``) are excluded from
    :meth:`settings`; :meth:`config` returns all of them so a worker process can rebuild the
    evaluator exactly.
    """

    name = "train"
    metric_units = METRIC_UNITS
    #: architectures per evaluate() call from evaluate_archs: one, so each finished training is
    #: committed to the store at once and a killed campaign loses at most one training.
    batch_size = 1

    def __init__(
        self,
        dataset: str = "fashion-mnist",
        epochs: int = 1,
        n_train: int | None = 1000,
        n_val: int | None = 500,
        n_test: int | None = 1000,
        batch_size: int = 64,
        lr: float = 2e-3,
        weight_decay: float = 0.05,
        optimizer: str = "adamw",
        momentum: float = 0.9,
        scheduler: str = "cosine",
        warmup_epochs: int = 0,
        label_smoothing: float = 0.1,
        grad_clip: float | None = None,
        augment: str = "none",
        resolution: int | str | None = None,
        amp: str | bool = "auto",
        channels_last: str | bool = "auto",
        split_seed: int = 0,
        bn_recalibration: int = 2000,
        latency: bool = True,
        device: str = "auto",
        trainings_per_gpu: int | None = None,
        threads: int | None = None,
        timeout_s: float | None = None,
        progress: bool = True,
        budget: str | None = None,
        probe_space: str | None = None,
    ):
        self.dataset = parse_dataset(dataset).name
        self.epochs = int(epochs)
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.train_batch_size = int(batch_size)  # `batch_size` is the contract's archs-per-call
        self.lr, self.weight_decay, self.momentum = float(lr), float(weight_decay), float(momentum)
        self.optimizer, self.scheduler = str(optimizer).lower(), str(scheduler).lower()
        self.warmup_epochs = int(warmup_epochs)
        self.label_smoothing = float(label_smoothing)
        self.grad_clip = None if grad_clip in (None, 0) else float(grad_clip)
        self.augment = str(augment)
        self.resolution = resolution
        self.amp = {True: "auto", False: "off"}.get(amp, amp) if isinstance(amp, bool) else str(amp)
        self.channels_last = channels_last
        self.split_seed = int(split_seed)
        self.bn_recalibration = int(bn_recalibration)
        self.latency = bool(latency)
        self.device = str(device)
        self.trainings_per_gpu = int(trainings_per_gpu) if trainings_per_gpu else default_trainings_per_gpu()
        # Fixed at construction (and carried by config() to workers) so the fingerprint does not
        # depend on which process computes it; used on CPU only.
        self.threads = int(threads) if threads else torch.get_num_threads()
        self.timeout_s = None if timeout_s in (None, 0) else float(timeout_s)
        self.progress = bool(progress)
        self.budget = budget
        self.probe_space = probe_space
        self._check()
        dev = resolve_device(self.device)
        if self.amp == "fp16" and dev.type != "cuda":
            raise ConfigError("amp='fp16' needs a CUDA device; use amp='bf16' or 'off' on CPU.")
        self._r = _Resolved(dev)

    def precision_choice(self) -> PrecisionChoice:
        """The precision and memory format of this evaluator's trainings (probed once, on first use)."""
        if self._r.choice is None:
            res = self.resolution if isinstance(self.resolution, int) else 28
            self._r.choice = choose_precision(self._r.dev, self.amp, self.channels_last, self.probe_space or "ofa_mbv3",
                                              batch_size=self.train_batch_size, resolution=res)
        return self._r.choice

    @classmethod
    def from_budget(cls, budget: str = "smoke", **overrides) -> "TrainingEvaluator":
        if budget not in BUDGETS:
            raise UnknownNameError("training budget", budget, BUDGETS)
        kw = dict(BUDGETS[budget])
        kw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(budget=budget, **kw)

    def _check(self):
        bad = []
        if self.epochs < 1:
            bad.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.train_batch_size < 2:
            bad.append(f"batch_size must be >= 2 (got {self.train_batch_size})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            bad.append(f"lr must be a positive number (got {self.lr})")
        if not 0 <= self.label_smoothing < 1:
            bad.append(f"label_smoothing must be in [0, 1) (got {self.label_smoothing})")
        if self.amp not in _AMP:
            bad.append(f"amp must be one of {sorted(_AMP)} (got {self.amp!r})")
        if self.augment not in _AUGMENT:
            bad.append(f"augment must be one of {sorted(_AUGMENT)} (got {self.augment!r})")
        if self.channels_last not in ("auto", True, False):
            bad.append(f"channels_last must be 'auto', true or false (got {self.channels_last!r})")
        r = self.resolution
        if not (r is None or r == "arch" or (isinstance(r, int) and r >= 8)):
            bad.append(f"resolution must be None (the dataset's own), 'arch' (the architecture's 'r' choice) or an int >= 8 (got {r!r})")
        if self.trainings_per_gpu < 1:
            bad.append(f"trainings_per_gpu must be >= 1 (got {self.trainings_per_gpu})")
        if bad:
            raise ConfigError("Invalid training settings: " + "; ".join(bad) + ".")

    # ---- contract ---------------------------------------------------------------------------
    def settings(self) -> dict:
        r = self._r
        self.precision_choice()
        return {
            "dataset": dataset_fingerprint(self.dataset),
            "epochs": self.epochs,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "split_seed": self.split_seed,
            "batch_size": self.train_batch_size,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "optimizer": self.optimizer,
            "momentum": self.momentum,
            "scheduler": self.scheduler,
            "warmup_epochs": self.warmup_epochs,
            "label_smoothing": self.label_smoothing,
            "grad_clip": self.grad_clip,
            "augment": self.augment,
            "resolution": self.resolution,
            "precision": r.choice.precision,
            "channels_last": r.channels_last,
            "bn_recalibration": self.bn_recalibration,
            "device_type": r.dev.type,
            "latency": self.latency,
            # latency numbers are only comparable on the same hardware
            **({"device_name": device_name(r.dev)} if self.latency else {}),
            # on CPU the thread count changes reduction order (accuracy) and latency
            **({"cpu_threads": self.threads} if r.dev.type == "cpu" else {}),
        }

    def config(self) -> dict:
        """All constructor arguments (results-changing or not), to rebuild this evaluator."""
        keys = ("dataset epochs n_train n_val n_test batch_size lr weight_decay optimizer momentum scheduler warmup_epochs "
                "label_smoothing grad_clip augment resolution amp channels_last split_seed bn_recalibration latency device trainings_per_gpu threads "
                "timeout_s progress budget probe_space").split()
        out = {k: getattr(self, k) for k in keys if k != "batch_size"}
        out["batch_size"] = self.train_batch_size
        return out

    def describe(self) -> dict:
        return {**super().describe(), "precision_choice": self.precision_choice().to_dict()}

    def data(self) -> ImageData:
        return _dataset(self.dataset, self.n_train, self.n_val, self.n_test, self.split_seed)

    def evaluate(self, space, archs: Sequence, seed: int = 0) -> list[EvalRecord]:
        data = self.data()  # dataset errors are the user's to fix: raise, do not record
        out = []
        for i, a in enumerate(archs):
            arch = to_arch(space, a)
            t0 = time.perf_counter()
            desc = f"{space.name} arch {i + 1}/{len(archs)} seed {seed}"
            try:
                metrics = self.train_arch(space, arch, seed, data, desc=desc)
            except TrainingFailed as e:
                out.append(self.failed_record(space, arch, seed, str(e), time.perf_counter() - t0, transient=e.transient))
                continue
            out.append(self.make_record(space, arch, seed, metrics, time.perf_counter() - t0))
        return out

    # ---- the training itself ---------------------------------------------------------------
    def _resolution(self, arch, data: ImageData) -> int:
        if self.resolution is None:
            return data.resolution
        if self.resolution == "arch":
            r = arch.global_dict.get("r")
            if r is None:
                raise ConfigError("resolution='arch' needs architectures with a global choice 'r'; this space has none. Use an int or None.")
            return int(r)
        return int(self.resolution)

    def _autocast(self):
        r = self._r
        self.precision_choice()
        if r.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=r.dev.type, dtype=r.amp_dtype)

    def train_arch(self, space, arch, seed: int = 0, data: ImageData | None = None, desc: str | None = None) -> dict:
        """Train one architecture; returns metrics or raises :class:`TrainingFailed`."""
        data = data or self.data()
        dev = self._r.dev
        old_threads = torch.get_num_threads()
        with gpu_slot(dev, self.trainings_per_gpu):
            failure = None
            try:
                if dev.type == "cpu":
                    torch.set_num_threads(self.threads)
                return self._train(space, arch, seed, data, desc)
            except Exception as e:  # noqa: BLE001 - a per-architecture failure becomes a record
                if isinstance(e, TrainingFailed):
                    failure = e
                elif _is_oom(e):
                    failure = TrainingFailed("out of memory", transient=True)
                else:
                    failure = TrainingFailed(f"{type(e).__name__}: {e}")
            finally:
                torch.set_num_threads(old_threads)
            # Outside the except block: the traceback (and the model/optimizer in its frames) is
            # gone, so the memory can really be returned before the next architecture.
            failure.__traceback__ = None
            failure.__context__ = failure.__cause__ = None
            if dev.type == "cuda":
                import gc

                gc.collect()
                torch.cuda.empty_cache()
            raise failure

    def _train(self, space, arch, seed, data: ImageData, desc) -> dict:
        import timm.loss
        import timm.optim
        import timm.scheduler
        from tqdm.auto import tqdm

        r = self._r
        self.precision_choice()
        dev = r.dev
        res = self._resolution(arch, data)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True

        model = space.build_model(arch, num_classes=data.num_classes, in_chans=data.in_chans, resolution=res)
        params = sum(p.numel() for p in model.parameters())
        flops = count_flops(model, data.in_chans, res)
        model = model.to(dev)
        if r.channels_last:
            model = model.to(memory_format=torch.channels_last)
        d = _placed(data, dev)

        opt_kw = {"momentum": self.momentum} if self.optimizer in ("sgd", "momentum", "nesterov") else {}
        opt = timm.optim.create_optimizer_v2(model, opt=self.optimizer, lr=self.lr, weight_decay=self.weight_decay, **opt_kw)
        n = len(d.train_y)
        bs = min(self.train_batch_size, n)
        steps = max(1, n // bs)
        sched, _ = timm.scheduler.create_scheduler_v2(
            opt, sched=self.scheduler, num_epochs=self.epochs, warmup_epochs=self.warmup_epochs, warmup_lr=self.lr * 0.01,
            step_on_epochs=False, updates_per_epoch=steps,
        )
        loss_fn = timm.loss.LabelSmoothingCrossEntropy(self.label_smoothing) if self.label_smoothing > 0 else torch.nn.CrossEntropyLoss()
        native = data.resolution
        check_every = 1 if dev.type == "cpu" else 25

        def prep(x):
            x = d.normalize(x.to(dev, non_blocking=True))
            if res != native:
                x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False)
            if r.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return x

        bar = tqdm(total=self.epochs * steps, desc=desc or f"{space.name} train", leave=False, disable=not self.progress, unit="step")
        t_start = time.perf_counter()
        bad = torch.zeros((), dtype=torch.bool, device=dev)
        updates = 0
        try:
            for epoch in range(self.epochs):
                model.train()
                perm = torch.randperm(n, generator=gen)[: steps * bs]
                for i in range(steps):
                    if self.timeout_s is not None and time.perf_counter() - t_start > self.timeout_s:
                        raise TrainingFailed(f"timeout: training exceeded timeout_s={self.timeout_s:g} s (epoch {epoch + 1}, step {i + 1} of {steps})")
                    idx = perm[i * bs : (i + 1) * bs]
                    xb = _augment(d.train_x[idx.to(d.train_x.device)], self.augment, gen)
                    yb = d.train_y[idx.to(d.train_y.device)].to(dev, non_blocking=True)
                    with self._autocast():
                        out = model(prep(xb))
                        loss = loss_fn(out.float(), yb)
                    bad |= ~torch.isfinite(loss.detach())
                    if (updates + 1) % check_every == 0 and bool(bad):
                        raise TrainingFailed(f"diverged: non-finite loss at epoch {epoch + 1}, step {i + 1}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.grad_clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
                    opt.step()
                    updates += 1
                    sched.step_update(num_updates=updates)
                    if self.progress and (i % 10 == 0 or i == steps - 1):
                        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
                    bar.update(1)
                sched.step(epoch + 1)
                if bool(bad):
                    raise TrainingFailed(f"diverged: non-finite loss in epoch {epoch + 1}")
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            train_seconds = time.perf_counter() - t_start
        finally:
            bar.close()

        self._recalibrate_bn(model, d.train_x, prep, bs)
        val_acc = self._accuracy(model, d.val_x, d.val_y, prep)
        test_acc = self._accuracy(model, d.test_x, d.test_y, prep)
        if not (math.isfinite(val_acc) and math.isfinite(test_acc)):
            raise TrainingFailed("diverged: non-finite outputs at evaluation")
        metrics = {
            "val_acc": val_acc,
            "test_acc": test_acc,
            "train_seconds": float(train_seconds),
            "params": int(params),
            "flops": int(flops),
        }
        if self.latency:
            for b in (1, 64):
                metrics[f"latency_b{b}_ms"] = measure_latency(model, data.in_chans, res, b, dev, self._autocast, r.channels_last)
        return metrics

    @torch.no_grad()
    def _recalibrate_bn(self, model, x, prep, bs: int) -> None:
        """Recompute batch-norm statistics as exact averages over training images.

        After a short proxy training the running statistics (exponential averages with momentum
        0.1 over few, rapidly changing steps) lag far behind the final weights, and evaluation in
        eval mode then measures that lag rather than the architecture. OFA recalibrates its
        subnets the same way before measuring them.
        """
        n = min(self.bn_recalibration, len(x))
        bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if n < 2 or not bns:
            return
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average: every batch weighs the same
        model.train()
        try:
            for i in range(0, n - 1, bs):  # `n - 1`: never a batch of one image
                j = min(i + bs, n)
                if j - i < 2:
                    break
                with self._autocast():
                    model(prep(x[i:j]))
        finally:
            for m, mom in zip(bns, saved):
                m.momentum = mom
            model.eval()

    @torch.no_grad()
    def _accuracy(self, model, x, y, prep, chunk: int = 1000) -> float:
        model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self._r.dev)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self._r.dev)
        for i in range(0, len(y), chunk):
            with self._autocast():
                out = model(prep(x[i : i + chunk]))
            nonfinite |= ~torch.isfinite(out).all()
            correct += (out.argmax(1) == y[i : i + chunk].to(out.device)).sum()
        if bool(nonfinite):
            return float("nan")
        return 100.0 * int(correct) / max(1, len(y))


def get_budget(name: str) -> dict:
    if name not in BUDGETS:
        raise UnknownNameError("training budget", name, BUDGETS)
    return dict(BUDGETS[name])


__all__ = ["AUTO_CANDIDATES", "BUDGETS", "METRIC_UNITS", "PRECISION_CANDIDATES", "PrecisionChoice", "TrainingEvaluator", "TrainingFailed",
           "choose_precision", "count_flops", "default_trainings_per_gpu", "device_name", "get_budget", "gpu_slot", "hold_slot",
           "measure_latency", "pick_precision", "precision_table_path", "probe_precision", "resolve_device", "slot_dir"]
