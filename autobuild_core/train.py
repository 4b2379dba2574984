"""Training the ranker, and the trained artefact that everything downstream consumes.

:class:`TrainedRanker` bundles the model with what scoring needs besides weights: the target's
standardisation, the hop moments (spread of node-embedding norms per hop) and the unit moments
(spread of the raw target per unit and depth), so that unit scores come out in the target's own
units and are comparable across units and depths (method.md §3). It saves as safetensors + JSON:
nothing is unpickled on load. Training keeps the weights of the best validation checkpoint and
reports the held-out Spearman they have (``val_spearman``, ``best_epoch``); :data:`PRESETS` names
the default (best measured) and the paper's settings (docs/ranker.md).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from search_spaces.errors import CheckpointError, ConfigError
from search_spaces.graph import FeatureSpec, GraphSet
from .loss import ranker_loss
from .metrics import rank_report, spearman
from .ranker import Ranker
from .settings import PRESETS, RANKER_PRESETS, TRAIN_PRESETS, RankerConfig, TrainConfig, preset  # noqa: F401 - re-exported

FORMAT_VERSION = 1
WEIGHTS_FILE = "ranker.safetensors"
META_FILE = "ranker.json"

MIN_TRAINING_ARCHS = 8
MIN_VAL_ARCHS = 8  # fewer held-out architectures: no checkpoint selection, the last weights are kept


def _graphs(space, archs) -> GraphSet:
    return GraphSet([space.to_graph(a) for a in archs])


@dataclass
class TrainedRanker:
    model: Ranker
    space_name: str
    features: tuple
    ranker_config: RankerConfig
    train_config: TrainConfig
    y_mean: float
    y_std: float
    hop_moments: list  # [(mean, std)] per hop, node-embedding L1 norms
    unit_moments: dict  # {(unit, depth): (mean, std, count)} of the raw target
    history: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    # The kept checkpoint: its epoch, and the Spearman of its prediction / of each hop's norm with
    # the target on the held-out validation split (None when there was no validation split).
    best_epoch: int | None = None
    val_spearman: float | None = None
    val_hop_spearman: list | None = None

    # ---- inference -------------------------------------------------------------------------
    @property
    def num_hops(self) -> int:
        return self.model.num_hops

    @property
    def space(self):
        from search_spaces import get_space

        return get_space(self.space_name)

    @torch.no_grad()
    def _run(self, gs: GraphSet, chunk: int = 4096):
        self.model.eval()
        preds, norms = [], []
        for start in range(0, len(gs), chunk):
            out = self.model(gs.batch(torch.arange(start, min(start + chunk, len(gs)))))
            preds.append(out.pred)
            norms.append(out.graph_norms())
        return torch.cat(preds).numpy() * self.y_std + self.y_mean, torch.cat(norms).numpy()

    def predict(self, archs: Sequence) -> np.ndarray:
        return self._run(_graphs(self.space, archs))[0]

    def hop_norms(self, archs: Sequence) -> np.ndarray:
        return self._run(_graphs(self.space, archs))[1]

    def evaluate(self, archs: Sequence, y) -> dict:
        pred, norms = self._run(_graphs(self.space, archs))
        return rank_report(pred, norms, np.asarray(y, dtype=float))

    def unit_moment(self, unit: int, depth: int) -> tuple[float, float]:
        """(mean, std) of the target for this unit and depth, falling back to all training data
        when the training set had fewer than two such architectures."""
        m = self.unit_moments.get((unit, depth))
        if m is None or m[2] < 2 or m[1] <= 0:
            return self.y_mean, self.y_std
        return m[0], m[1]

    # ---- persistence -----------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        save_file(state, str(path / WEIGHTS_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "space": self.space_name,
            "features": [f.to_dict() for f in self.features],
            "ranker_config": self.ranker_config.to_dict(),
            "train_config": self.train_config.to_dict(),
            "y_mean": self.y_mean,
            "y_std": self.y_std,
            "hop_moments": [list(m) for m in self.hop_moments],
            "unit_moments": [{"unit": u, "depth": d, "mean": m[0], "std": m[1], "count": m[2]} for (u, d), m in sorted(self.unit_moments.items())],
            "history": self.history,
            "meta": self.meta,
            "checkpoint": {"best_epoch": self.best_epoch, "val_spearman": self.val_spearman, "val_hop_spearman": self.val_hop_spearman},
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainedRanker":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        meta_path, weights_path = path / META_FILE, path / WEIGHTS_FILE
        if not meta_path.is_file() or not weights_path.is_file():
            raise CheckpointError(f"No ranker checkpoint in {path}: expected {META_FILE} and {WEIGHTS_FILE}. Train one first or check the path.")
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format_version") != FORMAT_VERSION:
                raise CheckpointError(f"{meta_path}: format version {meta.get('format_version')!r}, this autobuild reads {FORMAT_VERSION}.")
            features = tuple(FeatureSpec.from_dict(d) for d in meta["features"])
            rcfg = RankerConfig(**meta["ranker_config"])
            # checkpoints written before checkpoint selection kept the last epoch's weights
            tcfg = TrainConfig(**{"keep": "last", **meta["train_config"]})
            model = Ranker(features, rcfg)
            model.load_state_dict(load_file(str(weights_path)), strict=True)
        except CheckpointError:
            raise
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError, SafetensorError, ConfigError) as exc:
            raise CheckpointError(f"Ranker checkpoint in {path} is corrupted or incompatible ({type(exc).__name__}: {exc}). Retrain the ranker.") from None
        model.eval()
        return cls(
            model=model,
            space_name=meta["space"],
            features=features,
            ranker_config=rcfg,
            train_config=tcfg,
            y_mean=float(meta["y_mean"]),
            y_std=float(meta["y_std"]),
            hop_moments=[tuple(m) for m in meta["hop_moments"]],
            unit_moments={(d["unit"], d["depth"]): (d["mean"], d["std"], d["count"]) for d in meta["unit_moments"]},
            history=meta.get("history", []),
            meta=meta.get("meta", {}),
            best_epoch=(meta.get("checkpoint") or {}).get("best_epoch"),
            val_spearman=(meta.get("checkpoint") or {}).get("val_spearman"),
            val_hop_spearman=(meta.get("checkpoint") or {}).get("val_hop_spearman"),
        )


def _hop_moments(model: Ranker, gs: GraphSet, ids: np.ndarray, chunk: int = 4096) -> list:
    model.eval()
    sums, sq, n = None, None, 0
    ids = torch.as_tensor(ids)
    with torch.no_grad():
        for start in range(0, len(ids), chunk):
            b = gs.batch(ids[start : start + chunk])
            hs = model.node_embeddings(b.x_cat, b.x_cont, b.edge_index)
            norms = torch.stack([h.sum(1) for h in hs], 1).double()
            sums = norms.sum(0) if sums is None else sums + norms.sum(0)
            sq = (norms**2).sum(0) if sq is None else sq + (norms**2).sum(0)
            n += norms.shape[0]
    mean = sums / n
    std = torch.sqrt(torch.clamp(sq / n - mean**2, min=0))
    return [(float(m), float(s) if s > 1e-12 else 1.0) for m, s in zip(mean, std)]


def _unit_moments(archs: Sequence, y: np.ndarray) -> dict:
    groups: dict = {}
    for a, v in zip(archs, y):
        for u, cfg in enumerate(a.units):
            groups.setdefault((u, len(cfg)), []).append(v)
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in groups.items()}


class torch_threads:
    """Temporarily set torch's intra-op thread count (0 = leave as is)."""

    def __init__(self, n: int):
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self):
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)


def train_ranker(
    space,
    archs: Sequence,
    y,
    ranker: RankerConfig | None = None,
    train: TrainConfig | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    meta: dict | None = None,
    init: TrainedRanker | None = None,
) -> TrainedRanker:
    """Fit a ranker on (architecture, target) pairs; deterministic on CPU for a given seed.

    ``init``: start from this trained ranker's weights (fine-tuning, e.g. on another task's labels
    of the same space); its ranker configuration is used and ``ranker`` must be None or equal.
    The target is standardised on ``y`` as usual, so the source's target need not share units.
    """
    train = train or TrainConfig()
    if init is not None:
        if init.space_name != space.name:
            raise ConfigError(f"cannot fine-tune a {init.space_name!r} ranker on {space.name!r} architectures.")
        if ranker is not None and ranker != init.ranker_config:
            raise ConfigError("fine-tuning keeps the initial ranker's configuration; pass ranker=None.")
        ranker = init.ranker_config
    with torch_threads(train.threads):
        return _train(space, archs, y, ranker or RankerConfig(), train, on_epoch, meta, init)


def _train(space, archs, y, ranker: RankerConfig, train: TrainConfig, on_epoch, meta, init=None) -> TrainedRanker:
    y = np.asarray(y, dtype=np.float64)
    if len(archs) != len(y):
        raise ConfigError(f"train_ranker got {len(archs)} architectures but {len(y)} targets.")
    if not np.all(np.isfinite(y)):
        raise ConfigError("train_ranker: targets contain NaN or infinite values; failed evaluations must be filtered out first.")
    n_val = int(round(len(archs) * train.val_fraction))
    if len(archs) - n_val < MIN_TRAINING_ARCHS:
        raise ConfigError(
            f"Too few evaluated architectures to train a ranker: {len(archs)} (need at least {MIN_TRAINING_ARCHS} for training after a "
            f"{train.val_fraction:.0%} validation split). Evaluate more seed architectures (seeds.n)."
        )
    if float(np.std(y)) == 0:
        raise ConfigError("All targets are identical: the ranker has nothing to rank. Check the target metric and the evaluations.")

    rng = np.random.default_rng(train.seed)
    perm = rng.permutation(len(archs))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    gs = _graphs(space, archs)
    y_tr = y[tr_idx]
    y_mean, y_std = float(y_tr.mean()), float(y_tr.std()) or 1.0
    device = torch.device(train.device)
    y_t = torch.tensor((y - y_mean) / y_std, dtype=torch.float32, device=device)

    # Private random streams: Prefect runs tasks in threads, and anything else drawing from
    # torch's global generator meanwhile must not change this training run.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train.seed)
        model = Ranker(space.features, ranker)
    if init is not None:
        model.load_state_dict(init.model.state_dict())
    gen = torch.Generator().manual_seed(train.seed)
    model.to(device)
    flat = _FlatParameters(model)
    params = [flat.param]
    opt = torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay, **_fast_optimiser(device))
    validate = n_val >= 3
    select = train.keep == "best" and n_val >= MIN_VAL_ARCHS
    # deduplicated batches: each class of indistinguishable nodes is computed once (same numbers, to rounding)
    depth = ranker.layers
    val_batch = gs.batch(torch.as_tensor(val_idx), dedupe=depth).to(device) if validate else None
    yv = y[val_idx]
    history: list = []
    best = {"score": -math.inf, "epoch": None, "state": None, "pred": None, "hops": None}
    epochs = range(1, train.epochs + 1)
    if train.progress:
        from tqdm.auto import tqdm

        # disable=None: a bar on terminals, silence in logs and CI (no carriage-return floods)
        epochs = tqdm(epochs, desc="train ranker", unit="epoch", leave=False, disable=None)
    tr_t = torch.as_tensor(tr_idx)
    bs = train.batch_size

    def step_loss(b, yb):
        out = model(b)
        return ranker_loss(out.pred, yb, out.graph_norms(), train.rank_weight, train.tau, as_tensors=True)

    try:
        for epoch in epochs:
            model.train()
            order = tr_t[torch.randperm(len(tr_t), generator=gen)]
            # fold a tiny remainder into the previous batch: batch norm and ranks need a few graphs
            cuts = list(range(0, len(order), bs))
            if len(cuts) > 1 and len(order) - cuts[-1] < max(4, bs // 4):
                cuts.pop()
            step_parts = []
            bounds = cuts + [len(order)]
            for i, b in enumerate(gs.batches(order, bounds, dedupe=depth)):
                ids = order[bounds[i]:bounds[i + 1]]
                b, yb = b.to(device), y_t[ids.to(device)]
                loss, p = step_loss(b, yb)
                flat.zero_grad()
                loss.backward()
                if epoch == 1 and i == 0:
                    flat.check()
                if train.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, train.grad_clip, foreach=True)
                opt.step()
                step_parts.append(torch.stack([p["loss"], p["mse"], p["rank_loss"]]))
            # one conversion per epoch, not three per step
            means = torch.stack(step_parts).mean(0).tolist()
            record = {"epoch": epoch, "loss": means[0], "mse": means[1], "rank_loss": means[2]}
            if validate and (epoch % train.eval_every == 0 or epoch == train.epochs):
                model.eval()
                with torch.no_grad():
                    out = model(val_batch)
                record["val_pred_spearman"] = spearman(out.pred.cpu().numpy(), yv)
                record["val_hop_spearman"] = [spearman(c, yv) for c in out.graph_norms().cpu().numpy().T]
                score = _selection_score(record, train.select_by)
                if select and score > best["score"]:
                    best.update(score=score, epoch=epoch, state={k: v.detach().clone() for k, v in model.state_dict().items()},
                                pred=record["val_pred_spearman"], hops=record["val_hop_spearman"])
                    record["best"] = True
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            if not math.isfinite(record["loss"]):
                raise ConfigError(f"Ranker training diverged at epoch {epoch} (loss {record['loss']}). Lower train.lr or check the targets.")
            if select and train.patience and best["epoch"] is not None and epoch - best["epoch"] >= train.patience:
                break
    finally:  # each parameter gets its own storage back, also when training fails
        flat.release()
    last = history[-1]
    if best["state"] is not None:
        model.load_state_dict(best["state"])
        kept_epoch, val_pred, val_hops = best["epoch"], best["pred"], best["hops"]
    else:  # no selection (keep="last", or too few held-out architectures to choose by)
        kept_epoch, val_pred, val_hops = last["epoch"], last.get("val_pred_spearman"), last.get("val_hop_spearman")
    model.to("cpu").eval()
    trained = TrainedRanker(
        model=model,
        space_name=space.name,
        features=tuple(space.features),
        ranker_config=ranker,
        train_config=train,
        y_mean=y_mean,
        y_std=y_std,
        hop_moments=_hop_moments(model, gs, tr_idx),
        unit_moments=_unit_moments([archs[i] for i in tr_idx], y_tr),
        history=history,
        meta=dict(meta or {}, n_train=int(len(tr_idx)), n_val=int(n_val), trained_at=time.time(), epochs_run=int(last["epoch"]),
                  checkpoint="best" if best["state"] is not None else "last"),
        best_epoch=int(kept_epoch),
        val_spearman=None if val_pred is None or not math.isfinite(val_pred) else float(val_pred),
        val_hop_spearman=None if val_hops is None else [float(v) for v in val_hops],
    )
    return trained


class _FlatParameters:
    """All trainable parameters of a model, and their gradients, as views into one flat buffer
    each, so that zeroing, clipping and AdamW are one operation on one tensor instead of one per
    parameter (the ranker has ~50 tiny ones; per-tensor overhead was a sizeable part of a step).
    AdamW is elementwise, so the result is the same. :meth:`release` gives every parameter its
    own storage back (saving and ``state_dict`` consumers expect unshared tensors).
    """

    def __init__(self, model: torch.nn.Module):
        self.params = [p for p in model.parameters() if p.requires_grad]
        ref = self.params[0]
        n = sum(p.numel() for p in self.params)
        data, grad = ref.new_empty(n), ref.new_zeros(n)
        off = 0
        for p in self.params:
            k = p.numel()
            data[off:off + k].copy_(p.detach().reshape(-1))
            p.data = data[off:off + k].view_as(p)
            p.grad = grad[off:off + k].view_as(p)  # backward accumulates into it in place
            off += k
        self.param = torch.nn.Parameter(data)
        self.param.grad = grad

    def zero_grad(self) -> None:
        self.param.grad.zero_()

    def check(self) -> None:
        """Raise if backward replaced a gradient instead of accumulating into the flat buffer (the
        optimiser would then step on zeros); called once, after the first backward pass."""
        ptr = self.param.grad.untyped_storage().data_ptr()
        if any(p.grad is None or p.grad.untyped_storage().data_ptr() != ptr for p in self.params):
            raise RuntimeError("ranker training: a parameter's gradient left the flat buffer; please report this torch version.")

    def release(self) -> None:
        for p in self.params:
            p.data = p.data.clone()
            p.grad = None


def _selection_score(record: dict, select_by: str) -> float:
    """The validation score checkpoints compete on (NaN, e.g. a constant prediction, never wins)."""
    score = record["val_pred_spearman"]
    if select_by == "pred+final_hop":
        score = 0.5 * (score + record["val_hop_spearman"][-1])
    return score if math.isfinite(score) else -math.inf


def _fast_optimiser(device: torch.device) -> dict:
    """AdamW's fused kernel (one call for all parameters) where this torch offers it."""
    try:
        torch.optim.AdamW([torch.zeros(1, device=device, requires_grad=True)], fused=True)
        return {"fused": True}
    except (RuntimeError, ValueError, TypeError):
        return {"foreach": True}
