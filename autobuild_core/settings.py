"""Ranker and training settings (pydantic, torch-free) and their named presets.

Kept apart from the model and the training loop so that a run configuration validates, and a bad
one fails, without importing torch. ``autobuild_core.ranker`` and ``autobuild_core.train``
re-export every name here.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from search_spaces.errors import ConfigError, suggest

from .config_model import ConfigModel

GNN_TYPES = ("gatv2", "graphconv", "gin")


class RankerConfig(ConfigModel):
    """Model hyper-parameters (the defaults are the paper code's, and the best measured)."""

    _section: str = "ranker"

    gnn: str = Field("gatv2", description="Message-passing layer: gatv2, graphconv or gin.")
    hidden: int = Field(32, ge=1, description="Width of every message-passing layer's node embedding.")
    layers: int = Field(4, ge=1, le=16, description="Message-passing layers M; hops 0..M are scored.")
    fe_dim: int = Field(8, ge=1, description="Width of each feature's private embedding / hidden layer in the FE-MLP.")
    head_hidden: int = Field(32, ge=1, description="Hidden width of the regression head on the last hop.")

    @field_validator("gnn")
    @classmethod
    def _known_gnn(cls, v: str) -> str:
        if v not in GNN_TYPES:
            raise ValueError(f"not supported.{suggest(v, GNN_TYPES)} Choose one of {', '.join(GNN_TYPES)}")
        return v

    @classmethod
    def preset(cls, name: str) -> "RankerConfig":
        """The named preset's ranker settings ("default" or "paper"); see ``autobuild_core.train.PRESETS``."""
        if name not in RANKER_PRESETS:
            raise ConfigError(f"Unknown ranker preset {name!r}.{suggest(name, RANKER_PRESETS)} Choose one of {', '.join(RANKER_PRESETS)}.")
        return cls(**RANKER_PRESETS[name])


# The paper's model is also the best measured one: both presets share it.
RANKER_PRESETS: dict[str, dict] = {"default": {}, "paper": {"gnn": "gatv2", "hidden": 32, "layers": 4, "fe_dim": 8, "head_hidden": 32}}


class TrainConfig(ConfigModel):
    """Optimisation settings. Defaults are the best measured (docs/ranker.md); ``TrainConfig.preset("paper")``
    gives the paper code's (AdamW 1e-4, last epoch's weights)."""

    _section: str = "train"

    epochs: int = Field(400, ge=1, description="Training epochs (passes over the training architectures).")
    batch_size: int = Field(128, ge=2, description="Architectures per mini-batch (a tiny last batch is folded into the previous one).")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (the paper's 1e-4 is available as the 'paper' preset).")
    weight_decay: float = Field(1e-5, ge=0, description="AdamW weight decay.")
    rank_weight: float = Field(1.0, ge=0, description="Weight lambda of the hop-level Spearman loss (0: regression only; norms lose their meaning).")
    grad_clip: float = Field(5.0, ge=0, description="Gradient-norm clipping threshold (0: no clipping).")
    tau: float = Field(0.1, gt=0, description="Temperature of the soft ranks in the Spearman loss.")
    seed: int = Field(0, description="Seed of the validation split, initialisation and mini-batch order.")
    val_fraction: float = Field(0.1, ge=0, lt=0.9, description="Fraction of the architectures held out to pick the best checkpoint and report its Spearman.")
    eval_every: int = Field(5, ge=1, description="Epochs between validation checks (checkpoint candidates); the last epoch is always checked.")
    keep: Literal["best", "last"] = Field("best", description="Weights to keep: the best validation checkpoint, or the last epoch's.")
    select_by: Literal["pred", "pred+final_hop"] = Field(
        "pred", description="Validation score that picks the checkpoint: prediction Spearman, or its mean with the final hop's norm Spearman.")
    patience: Optional[int] = Field(None, ge=1, description="Stop after this many epochs without a better validation score (unset: train all epochs).")
    device: str = Field("cpu", description="Torch device for training (cpu, cuda, cuda:0).")
    threads: int = Field(1, ge=0, description="Torch intra-op threads while training (0: leave torch's setting); ranker graphs are tiny, 1 is fastest.")
    progress: bool = Field(False, description="Show a progress bar on terminals.")

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        """The named preset's training settings ("default" or "paper"), with optional overrides."""
        if name not in TRAIN_PRESETS:
            raise ConfigError(f"Unknown training preset {name!r}.{suggest(name, TRAIN_PRESETS)} Choose one of {', '.join(TRAIN_PRESETS)}.")
        return cls(**{**TRAIN_PRESETS[name], **overrides})


# "paper": the authors' code's optimisation (method.md §2), keeping the last epoch's weights as this
# project did before checkpoint selection. "default": the best measured settings (docs/ranker.md).
TRAIN_PRESETS: dict[str, dict] = {
    "default": {},
    "paper": {"epochs": 200, "batch_size": 128, "lr": 1e-4, "weight_decay": 1e-5, "rank_weight": 1.0, "grad_clip": 5.0,
              "val_fraction": 0.1, "keep": "last"},
}


def preset(name: str) -> tuple[RankerConfig, TrainConfig]:
    """(RankerConfig, TrainConfig) of a named preset: ``"default"`` or ``"paper"``."""
    return RankerConfig.preset(name), TrainConfig.preset(name)


PRESETS: dict[str, dict] = {name: {"ranker": RankerConfig.preset(name), "train": TrainConfig.preset(name)} for name in TRAIN_PRESETS}
assert set(PRESETS) == set(RANKER_PRESETS)
