"""``autobuild bench motifs``: time to score every unit configuration of a space.

A freshly initialised ranker is enough: the cost of scoring does not depend on the weights. The
reported time covers everything ``score_units`` does (building every unit graph, collating,
forward passes, moments), median over repeats; graph building and forward passes are also timed
apart so a regression in either shows.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from .common import write_json


def untrained_ranker(space, seed: int = 0):
    from autobuild_core.ranker import Ranker, RankerConfig
    from autobuild_core.train import TrainConfig, TrainedRanker

    torch.manual_seed(seed)
    cfg = RankerConfig()
    model = Ranker(space.features, cfg).eval()
    return TrainedRanker(model, space.name, tuple(space.features), cfg, TrainConfig(), 0.0, 1.0,
                         [(0.0, 1.0)] * model.num_hops, {})


def bench_motifs(space_name: str, repeats: int = 3, threads: int = 0, log=print) -> dict:
    from autobuild_core.scoring import score_units
    from autobuild_core.train import torch_threads
    from search_spaces import get_space

    space = get_space(space_name)
    trained = untrained_ranker(space)
    times, build_times = [], []
    with torch_threads(threads):
        for r in range(repeats):
            t0 = time.perf_counter()
            scores = score_units(trained, space)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            g = space.default_globals()
            for u in range(len(space.units)):
                space.unit_graph_set(u, space.unit_configs(u), g)
            build_times.append(time.perf_counter() - t0)
            log(f"  repeat {r}: {len(scores)} configurations scored in {times[-1]:.2f}s (graph building alone {build_times[-1]:.2f}s)")
    return {"space": space_name, "n_configs": int(len(scores)), "seconds": statistics.median(times), "seconds_all": times,
            "graph_build_seconds": statistics.median(build_times), "per_unit": scores.groupby("unit").size().tolist(),
            "threads": torch.get_num_threads() if not threads else threads}


def run(args) -> int:
    res = bench_motifs(args.space, args.repeats, args.threads)
    print(f"scored all {res['n_configs']} unit configurations of {res['space']} in {res['seconds']:.2f}s (median of {args.repeats}); "
          f"graph building {res['graph_build_seconds']:.2f}s")
    write_json(args.json, res)
    return 0


def register(sub) -> None:
    p = sub.add_parser("motifs", help="time to score every unit configuration of a space")
    p.add_argument("--space", required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json")
    p.set_defaults(func=run)
