"""A training run folder on disk: writing its checkpoint, the weights it hands on, loading it back.

A run folder (train.py's docstring lists its files) is what export, boosting and the tools read;
they import this module, not the training loop.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from redtrain.config import Config, config_from_dict
from redtrain.ensemble import build_ensemble
from redtrain.errors import UserError
from redtrain.provenance import write_atomic


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_atomic(obj: object, path: Path) -> None:
    """torch.save that never leaves half a checkpoint (see provenance.write_atomic)."""
    write_atomic(path, lambda tmp: torch.save(obj, tmp))


def kept_weights(state: dict) -> dict:
    """What a checkpoint hands to export: the best checked epoch's weights (with the overfitting
    check), else the averaged weights (with optim.ema), else the raw ones."""
    if state.get("best"):
        return state["best"]["model"]
    if state.get("average"):
        return state["average"]["state"]
    return state["model"]


def load_run(run_dir: str | Path, unfinished: bool = False) -> tuple[Config, nn.Module, dict]:
    """Load a finished run's config and trained ensemble (on CPU, eval mode) from its checkpoint;
    `unfinished=True` also takes a run stopped before its last epoch (for inspection, not export)."""
    run_dir = Path(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise UserError(f"{run_dir} is not a training run: {ckpt_path} not found")
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    cfg = config_from_dict(state["config"])
    if state["epoch"] < cfg.optim.epochs and not state.get("stopped") and not unfinished:
        raise UserError(f"{run_dir} is unfinished ({state['epoch']}/{cfg.optim.epochs} epochs); resume training first")
    ensemble = build_ensemble(cfg, state["classes"])
    ensemble.load_state_dict(kept_weights(state))
    ensemble.eval()
    return cfg, ensemble, state
