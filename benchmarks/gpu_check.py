"""One-shot GPU check of issue 13's figures, for a session that is lent a GPU (run via gpu_check.sh).

Measures, on the ofa_mbv3 Fashion-MNIST protocol (batch 512, 28x28, 3 epochs x 25k images):
(1) training samples/s of fp32 NCHW, bf16 + channels-last, fp32 + channels-last and bf16 NCHW,
and the probe's choice; (2) architectures/hour with ``--workers`` processes sharing the GPU (goal
>= 3 x 1,290), GPU utilisation and memory; (3) calibration of the protocol: the repeat Spearman
and noise ceiling per candidate budget (goal >= 0.8). Each step's figures are written to the JSON
as soon as it ends, so a run cut short keeps what it measured. ``--quick`` shrinks everything to
seconds so the script can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

PROTOCOL = dict(dataset="fashion-mnist", epochs=3, n_train=25000, n_val=5000, n_test=10000, batch_size=512, lr=2e-3,
                warmup_epochs=0, augment="none", latency=False)
QUICK = dict(dataset="fashion-mnist", epochs=1, n_train=64, n_val=128, n_test=32, batch_size=32, resolution=16, lr=5e-3,
             warmup_epochs=0, augment="none", latency=False, bn_recalibration=64)
BASELINE_ARCHS_PER_HOUR = 1290.0


def _write(out: Path, payload: dict) -> None:
    from benchmarks.common import _clean

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(payload), indent=1, default=str))
    os.replace(tmp, out)


def step_precision(dev, quick: bool, table: Path) -> dict:
    """All four candidates timed on sampled ofa_mbv3 networks, and the choice ``amp='auto'`` makes."""
    from evaluators.training import PRECISION_CANDIDATES, choose_precision, pick_precision, probe_precision
    from search_spaces import get_space

    space = get_space("ofa_mbv3")
    bs, res, n, steps = (QUICK["batch_size"], QUICK["resolution"], 1, 1) if quick else (PROTOCOL["batch_size"], 28, 4, 10)
    models = [space.build_model(a, num_classes=10, in_chans=1, resolution=res) for a in space.sample(n, seed=0, stratified=True)]
    t0 = time.perf_counter()
    measured = probe_precision(models, dev, 1, res, 10, bs, steps=steps, warmup=1 if quick else 3, candidates=list(PRECISION_CANDIDATES))
    # the table entry every worker of this machine then reads (amp='auto')
    choice = choose_precision(dev, probe_space="ofa_mbv3", batch_size=bs, resolution=res, in_chans=1, table=table,
                              probe_on_cpu=quick, n_models=2, steps=3 if not quick else 1)
    return {"samples_per_s": measured, "fastest": max(measured, key=measured.get), "pick_all_candidates": pick_precision(measured),
            "bf16_cl_over_fp32": measured["bf16_cl"] / measured["fp32"], "auto_choice": choice.to_dict(),
            "models": n, "batch_size": bs, "resolution": res, "steps": steps, "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets (seconds on a CPU) to check the script itself")
    p.add_argument("--out", default="gpu_check.json", help="JSON written after every step")
    p.add_argument("--workers", type=int, help="training processes sharing the GPU (default 12; quick: 2)")
    p.add_argument("--archs", type=int, help="architectures of the throughput run (default 48; quick: 4)")
    p.add_argument("--calib-archs", type=int, help="architectures per calibration budget and seed (default 12; quick: 4)")
    p.add_argument("--calib-budgets", help="candidate budgets (default '3x25000,6x25000,10xall'; quick: '1x64,1x256')")
    p.add_argument("--calib-max-seconds", type=float, help="calibration cost cap in evaluation seconds (default 3000; quick: 300)")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip", default="", help="comma-separated steps to skip: precision, throughput, calibration")
    args = p.parse_args(argv)

    import torch

    from benchmarks.train import run_bench, run_calibration
    from evaluators.training import TrainingEvaluator, device_name, resolve_device

    quick = args.quick
    dev = resolve_device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)  # as the workers: more threads than free cores stall on a shared CPU
    workers = args.workers or (2 if quick else 12)
    out = Path(args.out)
    work = out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    table = work / "precision_table.json"
    os.environ["AUTOBUILD_PRECISION_TABLE"] = str(table)  # spawned workers read the probe's entry
    os.environ.setdefault("AUTOBUILD_LOCK_DIR", str(work / "locks"))
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    base = dict(QUICK if quick else PROTOCOL, device=args.device, progress=False, trainings_per_gpu=workers)
    report: dict = {"quick": quick, "device": device_name(dev), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "protocol": base, "workers": workers, "goals": {"archs_per_hour": 3 * BASELINE_ARCHS_PER_HOUR, "spearman_ceiling": 0.8},
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "steps": {}}
    _write(out, report)
    t_all = time.perf_counter()

    if "precision" not in skip:
        print("[1/3] precision probe ...", flush=True)
        report["steps"]["precision"] = step_precision(dev, quick, table)
        _write(out, report)
        print(json.dumps(report["steps"]["precision"]["samples_per_s"]), flush=True)
    choice = TrainingEvaluator(**{**base, "threads": 1}).precision_choice()
    report["precision_used"] = choice.to_dict()

    if "throughput" not in skip:
        print(f"[2/3] throughput: {args.archs or (4 if quick else 48)} archs, {workers} processes ...", flush=True)
        res = run_bench("ofa_mbv3", {**base, "threads": 1}, n_archs=args.archs or (4 if quick else 48), workers=workers, seed=0,
                        progress=False, threads=1)
        res.pop("records", None)
        res["goal_met"] = bool(res["archs_per_hour"] >= 3 * BASELINE_ARCHS_PER_HOUR)
        res["speedup_over_baseline"] = res["archs_per_hour"] / BASELINE_ARCHS_PER_HOUR
        report["steps"]["throughput"] = res
        _write(out, report)
        print(f"  {res['archs_per_hour']:.0f} archs/hour (steady {res['archs_per_hour_steady']}), gpu {res['gpu']}", flush=True)

    if "calibration" not in skip:
        budgets = args.calib_budgets or ("1x64,1x256" if quick else "3x25000,6x25000,10xall")
        settings = {"n_archs": args.calib_archs or (4 if quick else 12), "budgets": budgets.split(","), "threshold": 0.8,
                    "max_seconds": args.calib_max_seconds or (300.0 if quick else 3000.0)}
        print(f"[3/3] calibration {settings} ...", flush=True)
        t0 = time.perf_counter()
        cal = run_calibration("ofa_mbv3", {**base, "threads": 1}, str(work / "calibration.sqlite"), settings, workers=workers, threads=1)
        cal["wall_seconds_total"] = time.perf_counter() - t0
        cal.pop("archs", None)
        report["steps"]["calibration"] = cal
        _write(out, report)
        print(cal["message"], flush=True)

    report["seconds"] = time.perf_counter() - t_all
    _write(out, report)
    print(f"wrote {out} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
