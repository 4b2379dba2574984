"""``autobuild bench train``: how many architectures per hour the training evaluator gets through.

End to end on the user's own hardware (process start, data decode, training, evaluation, FLOPs,
latency): ``--archs`` architectures trained by ``--workers`` spawned processes exactly as a campaign
would, reported as architectures/hour beside per-architecture times and the accuracy spread; on
CUDA also GPU utilisation and memory, and with ``--calibrate`` the calibration's noise ceiling.
CPU workers split the cores; GPU worker ``i`` uses GPU ``i % n_gpus``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

_WORKER: dict = {}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def _worker_init(threads: int, devices) -> None:
    import torch

    torch.set_num_threads(max(1, threads))
    _WORKER["device"] = devices.get() if devices is not None else None


def _worker_evaluator(config: dict):
    """This worker's settings (its own device, if pinned) and its evaluator for them, built once per worker."""
    from evaluators.training import TrainingEvaluator

    cfg = dict(config)
    if _WORKER.get("device"):
        cfg["device"] = _WORKER["device"]
    key = json.dumps(cfg, sort_keys=True, default=str)
    if key not in _WORKER:
        _WORKER[key] = TrainingEvaluator(**cfg)
    return cfg, _WORKER[key]


def _train_one(config: dict, space_name: str, arch, seed: int) -> dict:
    """Runs in a worker: one architecture -> record dict (the evaluator is built once per worker)."""
    from search_spaces import get_space

    cfg, ev = _worker_evaluator(config)
    space = get_space(space_name)
    rec = ev.evaluate(space, [arch], seed=seed)[0]
    d = rec.to_dict()
    d["worker_device"] = cfg.get("device")
    d["max_memory_allocated"] = _max_memory(ev)
    return d


def _store_one(config: dict, space_name: str, arch, seed: int, store_path: str, retries: int) -> str:
    """Runs in a worker: evaluate one architecture into the store; returns the fingerprint used."""
    from evaluators.store import EvaluationStore, evaluate_archs
    from search_spaces import get_space

    cfg, ev = _worker_evaluator(config)
    st = _WORKER.get(("store", store_path))
    if st is None:
        st = _WORKER[("store", store_path)] = EvaluationStore(store_path)
    evaluate_archs(ev, get_space(space_name), [arch], st, seed=seed, retries=retries, progress=False)
    return ev.fingerprint()


class ProcessRunner:
    """A ``runner`` for :func:`evaluators.calibration.calibrate`: trains the architectures in
    ``workers`` persistent ``spawn`` processes (worker ``i`` on GPU ``i % n_gpus`` under CUDA) into
    the SQLite store at ``store_path``, which several processes may fill at once.

    Args:
        store_path: the evaluation store file (the same one ``calibrate`` reads).
        workers: worker processes (on one GPU: trainings sharing it).
        threads: torch threads per worker (CPU trainings).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        retries: retries of transient failures per training.
    """

    def __init__(self, store_path: str, workers: int, threads: int = 1, device: str = "auto", retries: int = 2):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        import torch

        from evaluators.training import resolve_device

        self.store_path, self.retries = str(store_path), retries
        dev = resolve_device(device)
        ctx = mp.get_context("spawn")
        q = None
        if dev.type == "cuda":
            q = ctx.Queue()
            n_gpu = torch.cuda.device_count()
            for i in range(workers):
                q.put(f"cuda:{dev.index if dev.index is not None else i % n_gpu}")
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(threads, q))

    def __call__(self, space_name: str, settings: dict, archs: list, seed: int) -> str | None:
        cfg = {**settings, "progress": False}
        futs = [self.pool.submit(_store_one, cfg, space_name, a, seed, self.store_path, self.retries) for a in archs]
        fps = {f.result() for f in futs}
        if len(fps) > 1:
            from search_spaces.errors import ConfigError

            raise ConfigError(f"worker processes computed different evaluator fingerprints {sorted(fps)}: their settings resolve differently")
        return fps.pop() if fps else None

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _max_memory(ev) -> int | None:
    """Peak bytes this process allocated on the evaluator's GPU so far (None on CPU)."""
    import torch

    dev = ev._r.dev
    if dev.type != "cuda":
        return None
    return int(torch.cuda.max_memory_allocated(dev))


class GpuMonitor:
    """Samples GPU utilisation (%) and memory in use (MiB) every ``interval_s`` in a thread.

    Uses NVML (``pynvml``) when importable, else ``nvidia-smi``; with neither (or on CPU)
    :meth:`result` says ``n/a`` and why.
    """

    def __init__(self, interval_s: float = 0.5, enabled: bool = True):
        self.interval_s = float(interval_s)
        self.samples: list[tuple[float, float]] = []  # (mean utilisation % over GPUs, memory MiB summed)
        self.source: str | None = None
        self.reason = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._pick() if enabled else None
        if not enabled:
            self.reason = "not a CUDA run"

    def _pick(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]

            def read():
                u = [pynvml.nvmlDeviceGetUtilizationRates(h).gpu for h in handles]
                m = [pynvml.nvmlDeviceGetMemoryInfo(h).used / 2 ** 20 for h in handles]
                return statistics.fmean(u), sum(m)

            self.source = "nvml"
            return read
        except Exception:  # noqa: BLE001 - pynvml missing or NVML unusable: try nvidia-smi
            pass
        exe = shutil.which("nvidia-smi")
        if exe is None:
            self.reason = "neither pynvml nor nvidia-smi is available"
            return None

        def read_smi():
            out = subprocess.run([exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
            rows = [[float(v) for v in ln.split(",")] for ln in out.strip().splitlines() if ln.strip()]
            return statistics.fmean(r[0] for r in rows), sum(r[1] for r in rows)

        try:
            read_smi()
        except (OSError, subprocess.SubprocessError, ValueError) as e:
            self.reason = f"nvidia-smi failed: {e}"
            return None
        self.source = "nvidia-smi"
        return read_smi

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append(self._read())
            except Exception as e:  # noqa: BLE001 - a failed sample ends sampling, not the benchmark
                self.reason = f"sampling stopped: {e}"
                return

    def __enter__(self):
        if self._read is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)

    def result(self) -> dict:
        if not self.samples:
            return {"source": self.source, "utilisation_mean": "n/a", "utilisation_max": "n/a", "memory_used_max_mib": "n/a",
                    "samples": 0, "reason": self.reason or "no samples (run too short)"}
        u = [a for a, _ in self.samples]
        return {"source": self.source, "utilisation_mean": statistics.fmean(u), "utilisation_max": max(u),
                "memory_used_max_mib": max(b for _, b in self.samples), "samples": len(self.samples), "reason": self.reason}


def _steady_rate(done: list[float], workers: int) -> float | None:
    """Completions after the first ``workers`` over the time since the ``workers``-th: the rate
    once every worker runs (process start, CUDA init, dataset load excluded); None if too few."""
    done = sorted(done)
    w = max(1, workers)
    if len(done) < w + 2 or done[-1] <= done[w - 1]:
        return None
    return (len(done) - w) / (done[-1] - done[w - 1]) * 3600.0


def _stats(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "sd": None, "min": None, "max": None, "median": None}
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
        "median": statistics.median(values),
    }


def run_bench(space_name: str, evaluator_config: dict, n_archs: int = 8, workers: int = 1, seed: int = 0, progress: bool = True,
              threads: int | None = None) -> dict:
    """Train ``n_archs`` sampled architectures with ``workers`` processes; returns the summary."""
    import torch

    from search_spaces.errors import ConfigError
    from evaluators.training import TrainingEvaluator, device_name, resolve_device
    from search_spaces import get_space

    if n_archs < 1 or workers < 1:
        raise ConfigError(f"--archs and --workers must be >= 1 (got {n_archs}, {workers}).")
    space = get_space(space_name)
    dev = resolve_device(evaluator_config.get("device", "auto"))
    workers = min(workers, n_archs)
    threads = threads or max(1, _cpu_count() // workers)
    evaluator_config = {**evaluator_config, "threads": threads}  # CPU trainings use exactly this many
    main_ev = TrainingEvaluator(**evaluator_config)  # validates settings and the dataset name up front
    main_ev.data()
    archs = [space.format(a) for a in space.sample(n_archs, seed=seed)]
    if dev.type == "cpu":
        devices = None
    else:
        n_gpu = torch.cuda.device_count()
        devices = [f"cuda:{dev.index if dev.index is not None else i % n_gpu}" for i in range(workers)]

    records: list[dict] = []
    monitor = GpuMonitor(enabled=dev.type == "cuda")
    monitor.__enter__()
    t0 = time.perf_counter()
    if workers == 1:
        ev = TrainingEvaluator(**{**evaluator_config, "progress": progress})
        for i, a in enumerate(archs):
            rec = ev.evaluate(space, [a], seed=seed)[0]
            records.append({**rec.to_dict(), "worker_device": str(dev), "max_memory_allocated": _max_memory(ev),
                            "done_s": time.perf_counter() - t0})
            if progress:
                _print_progress(i + 1, n_archs, records[-1])
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = mp.get_context("spawn")
        q = None
        if devices:
            q = ctx.Queue()
            for d in devices:
                q.put(d)
        cfg = {**evaluator_config, "progress": False}
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init, initargs=(threads, q)) as pool:
            futs = [pool.submit(_train_one, cfg, space_name, a, seed) for a in archs]
            for i, f in enumerate(as_completed(futs)):
                records.append({**f.result(), "done_s": time.perf_counter() - t0})
                if progress:
                    _print_progress(i + 1, n_archs, records[-1])
    wall = time.perf_counter() - t0
    monitor.__exit__(None, None, None)
    mem = [r["max_memory_allocated"] for r in records if r.get("max_memory_allocated") is not None]

    ok = [r for r in records if r["status"] == "ok"]
    per_arch = [r["seconds"] for r in records]
    return {
        "space": space_name,
        "n_archs": n_archs,
        "n_ok": len(ok),
        "n_failed": len(records) - len(ok),
        "failures": sorted({(r.get("error") or "").splitlines()[0] for r in records if r["status"] != "ok"}),
        "workers": workers,
        "threads_per_worker": threads,
        "device": device_name(dev),
        "wall_seconds": wall,
        "archs_per_hour": n_archs / wall * 3600.0,
        "archs_per_hour_steady": _steady_rate([r["done_s"] for r in records], workers),
        "seconds_per_arch": {"mean": statistics.fmean(per_arch), "median": statistics.median(per_arch)},
        "train_seconds": _stats([r["metrics"]["train_seconds"] for r in ok]),
        "val_acc": _stats([r["metrics"]["val_acc"] for r in ok]),
        "test_acc": _stats([r["metrics"]["test_acc"] for r in ok]),
        "latency_b1_ms": _stats([r["metrics"]["latency_b1_ms"] for r in ok if "latency_b1_ms" in r["metrics"]]),
        "gpu": {**monitor.result(),
                "max_memory_allocated_mib": max(mem) / 2 ** 20 if mem else "n/a"},
        "precision_choice": main_ev.precision_choice().to_dict(),
        "settings": main_ev.settings(),
        "fingerprint": main_ev.fingerprint(),
        "seed": seed,
        "records": records,
    }


def _print_progress(done: int, total: int, rec: dict) -> None:
    if rec["status"] == "ok":
        m = rec["metrics"]
        print(f"  [{done}/{total}] val {m['val_acc']:.2f}%  test {m['test_acc']:.2f}%  {rec['seconds']:.1f} s", flush=True)
    else:
        print(f"  [{done}/{total}] failed: {(rec.get('error') or '').splitlines()[0]}", flush=True)


def summary_text(res: dict) -> str:
    acc = res["test_acc"]
    lines = [
        f"bench train: {res['space']} on {res['settings']['dataset']}, {res['n_archs']} archs, {res['workers']} worker(s) x "
        f"{res['threads_per_worker']} thread(s), {res['device']}",
        f"  throughput       {res['archs_per_hour']:.1f} archs/hour (wall {res['wall_seconds']:.1f} s); steady "
        f"{'n/a' if res.get('archs_per_hour_steady') is None else format(res['archs_per_hour_steady'], '.1f')} archs/hour after the first round",
        f"  seconds/arch     mean {res['seconds_per_arch']['mean']:.2f}, median {res['seconds_per_arch']['median']:.2f} (per worker)",
    ]
    if acc["mean"] is not None:
        lines.append(f"  test accuracy    mean {acc['mean']:.2f}%, sd {acc['sd']:.2f}, min {acc['min']:.2f}, max {acc['max']:.2f}")
        v = res["val_acc"]
        lines.append(f"  val accuracy     mean {v['mean']:.2f}%, sd {v['sd']:.2f}, min {v['min']:.2f}, max {v['max']:.2f}")
    if res["n_failed"]:
        lines.append(f"  failed           {res['n_failed']}: {'; '.join(res['failures'][:3])}")
    g = res.get("gpu") or {}
    if g:
        util = g["utilisation_mean"]
        util_s = "n/a" if isinstance(util, str) else f"mean {util:.0f}%, max {g['utilisation_max']:.0f}% ({g['source']}, {g['samples']} samples)"
        mem = g["max_memory_allocated_mib"]
        used = g["memory_used_max_mib"]
        lines.append(f"  GPU utilisation  {util_s}" + (f" [{g['reason']}]" if isinstance(util, str) and g.get("reason") else ""))
        lines.append(f"  GPU memory       peak allocated per worker {'n/a' if isinstance(mem, str) else f'{mem:.0f} MiB'}, "
                     f"device in use max {'n/a' if isinstance(used, str) else f'{used:.0f} MiB'}")
    pc = res.get("precision_choice")
    if pc:
        lines.append(f"  precision        {pc['precision']}{' + channels-last' if pc['channels_last'] else ''} ({pc['source']}: {pc['reason']})")
    cal = res.get("calibration")
    if cal:
        lines.append(f"  calibration      {cal['status']}: " + (f"{cal['chosen']['epochs']}x{cal['chosen']['n_train'] or 'all'}, ceiling {cal['ceiling']:.3f}"
                                                            if cal.get("chosen") else "no budget reached the threshold"))
        for r in cal["budgets"]:
            c = "n/a" if r["ceiling"] is None else f"{r['ceiling']:.3f}"
            lines.append(f"    {r['budget']:>12}: ceiling {c}, {r['seconds_per_arch']:.1f} s/arch, {r['n_pairs']} pairs")
    s = res["settings"]
    lines.append(f"  recipe           epochs {s['epochs']}, n_train {s['n_train']}, batch {s['batch_size']}, {s['optimizer']} lr {s['lr']}, "
                 f"{s['precision']}, resolution {s['resolution'] or 'native'}")
    return "\n".join(lines)


def evaluator_config_from_args(args) -> dict:
    from evaluators.training import TrainingEvaluator

    over = {
        "dataset": args.dataset, "epochs": args.epochs, "n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test,
        "batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer, "resolution": args.resolution,
        "device": args.device, "trainings_per_gpu": args.trainings_per_gpu, "timeout_s": args.timeout,
    }
    if args.no_latency:
        over["latency"] = False
    ev = TrainingEvaluator.from_budget(args.budget, **over)
    return ev.config()


def _resolution(v: str):
    if v in ("arch", "native"):
        return None if v == "native" else v
    return int(v)


def run_calibration(space_name: str, evaluator_config: dict, store_path: str, settings: dict, workers: int = 1,
                    threads: int = 1) -> dict:
    """Calibrate the benchmark's protocol (:func:`evaluators.calibration.calibrate`) with ``workers``
    processes; its ``to_dict()`` (also when no budget ranks: ``status='no_budget_ranks'``, message)."""
    from evaluators.calibration import CalibrationSettings, calibrate
    from evaluators.store import EvaluationStore

    cfg = {k: v for k, v in evaluator_config.items() if k != "budget"}
    runner = ProcessRunner(store_path, workers, threads=threads, device=cfg.get("device", "auto")) if workers > 1 else None
    try:
        with EvaluationStore(store_path) as st:
            res = calibrate(space_name, cfg, st, CalibrationSettings(**settings), raise_on_failure=False, progress=False, runner=runner)
    finally:
        if runner is not None:
            runner.close()
    return res.to_dict()


def _calibration_settings(args) -> dict:
    out: dict = {}
    if args.calib_budgets:
        out["budgets"] = [b.strip() for b in args.calib_budgets.split(",") if b.strip()]
    for k in ("n_archs", "threshold", "max_seconds"):
        v = getattr(args, f"calib_{k}")
        if v is not None:
            out[k] = v
    return out


def run(args) -> int:
    cfg = evaluator_config_from_args(args)
    res = run_bench(args.space, cfg, n_archs=args.archs, workers=args.workers, seed=args.seed, progress=not args.quiet,
                    threads=args.threads)
    if args.calibrate:
        store = args.calib_store or str(Path(args.json).with_suffix(".calibration.sqlite") if args.json else "bench-calibration.sqlite")
        res["calibration"] = run_calibration(args.space, {**cfg, "progress": False, "threads": res["threads_per_worker"]}, store,
                                             _calibration_settings(args), workers=res["workers"], threads=res["threads_per_worker"])
        if res["calibration"]["status"] != "chosen":
            print(res["calibration"]["message"])
    print(summary_text(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
        print(f"  wrote {args.json}")
    return 0 if res["n_ok"] else 1


def register(sub) -> None:
    p = sub.add_parser("train", help="train sampled architectures and report archs/hour and accuracy spread",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--space", required=True, help="search space (ofa_mbv3, nb201, ...)")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist | idx:PATH | imagefolder:PATH | cifar10:PATH")
    p.add_argument("--budget", default="smoke", help="preset the other options override: smoke (default), fast, standard")
    p.add_argument("--epochs", type=int)
    p.add_argument("--n-train", type=int, help="training images (validation images are carved off separately)")
    p.add_argument("--n-val", type=int)
    p.add_argument("--n-test", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", help="any timm optimizer name (adamw, sgd, lamb, ...)")
    p.add_argument("--resolution", type=_resolution, help="training resolution: an int, 'native' (dataset's own) or 'arch' (the arch's r)")
    p.add_argument("--archs", type=int, default=8, help="architectures to train (default 8)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--trainings-per-gpu", type=int, help="trainings that may share one GPU at a time (default $AUTOBUILD_TRAININGS_PER_GPU, else 1)")
    p.add_argument("--timeout", type=float, help="seconds of training after which an architecture is a failed record")
    p.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: cores / workers; on a busy machine 1 is often faster)")
    p.add_argument("--seed", type=int, default=0, help="sampling and training seed")
    p.add_argument("--json", help="write the summary and every record here")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--calibrate", action="store_true", help="also calibrate the protocol (two seeds x candidate budgets) and report its noise ceiling")
    p.add_argument("--calib-budgets", help="candidate budgets, e.g. '1x2000,2x2000,3xall' (epochs x training images; default: CalibrationSettings)")
    p.add_argument("--calib-n-archs", type=int, help="architectures per budget and seed (default 12)")
    p.add_argument("--calib-threshold", type=float, help="ceiling to reach (default 0.8)")
    p.add_argument("--calib-max-seconds", type=float, help="cost cap in evaluation seconds (default 3600)")
    p.add_argument("--calib-store", help="evaluation store of the calibration trainings (default: next to --json); reruns reuse it")
    p.set_defaults(func=run)
