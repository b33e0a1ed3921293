"""Full-state training checkpoints: model, AdamW moments, schedule, step, RNG of every rank, data position.

Everything is safetensors + JSON (no pickle), so a checkpoint is safe to open and readable without our code:

    <checkpoint>/
      model/                  VLAModel.save_pretrained: config.json, model.safetensors, tokenizer/ (loads
                              with VLAModel.from_pretrained, so any checkpoint can be evaluated)
      optimizer.safetensors   "<param name>/exp_avg", ".../exp_avg_sq", ".../step" of every trained parameter
      rng.safetensors         "rank<r>/cpu" (and "rank<r>/cuda") torch generator states of every rank
      state.json              step, world size, scheduler, optimiser groups, data position, python/numpy RNG
      ema.safetensors         with `<stage>.ema_decay` > 0: the average of the trained parameters
                              (components/training/ema.py; `model/` keeps the live weights)

The same calls work for a plain module, DDP and FSDP2 (`fully_shard`): states are gathered to full
tensors on rank 0 through `torch.distributed.checkpoint.state_dict` (a collective: every rank calls
`save_train_state`; only rank 0 writes), and on restore every rank reads the files and takes its shard.

    save_train_state(folder, model, optimizer, scheduler, step=250, data_position=loader.state_dict(), ...)
    state = load_train_state(folder, model, optimizer, scheduler)    # -> RestoredState(step, data_position)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from components.training.ema import EMA_FILE, WeightEMA
from model.vla import VLAModel

FORMAT, VERSION = "upvla-train-state", 1
MODEL_DIR, OPTIMIZER_FILE, RNG_FILE, STATE_FILE = "model", "optimizer.safetensors", "rng.safetensors", "state.json"


@dataclass(frozen=True)
class RestoredState:
    """What the loop needs back besides the module states: where it was."""

    step: int
    data_position: dict[str, Any]


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict[str, Any]:
    """This process's python, numpy and torch (CPU, current CUDA device) generator states."""
    kind, key, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    py_version, py_key, py_gauss = random.getstate()
    state = {"python": [py_version, list(py_key), py_gauss],
             "numpy": [kind, key.tolist(), int(pos), int(has_gauss), float(gauss)],
             "cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (tensors may come from safetensors, lists from JSON)."""
    py_version, py_key, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_key), py_gauss))
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _gather_rng() -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (all ranks call; tensors move as bytes)."""
    mine = rng_state()
    if not dist.is_initialized():
        return [mine]
    everyone: list[Any] = [None] * _world()
    dist.all_gather_object(everyone, mine)
    return everyone


# --------------------------------------------------------------------------- save


def save_train_state(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, *, step: int, data_position: dict[str, Any],
                     plain_model: VLAModel, ema: WeightEMA | None = None) -> Path | None:
    """Write a full-state checkpoint (see the module docstring); a collective when distributed.

    Args:
        folder: where rank 0 writes (created); other ranks write nothing.
        model: the trained module as the optimiser sees it (plain, or FSDP2-sharded; not the DDP wrapper).
        optimizer: AdamW over `model`'s parameters; its moments and step counts are saved.
        scheduler: the learning-rate schedule; its position is saved.
        step: optimiser steps done.
        data_position: JSON-able position of the data stream (the loader's `state_dict()`).
        plain_model: a `VLAModel` of the same config carrying the text tokenizer, used to write `model/`
            (it may live on the meta device: the gathered weights are assigned to it).
        ema: the weight average, when the stage keeps one (written to `ema.safetensors`).

    Returns:
        The folder on rank 0, None on other ranks.
    """
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_sd, optim_sd = get_state_dict(model, optimizer, options=options)
    rngs = _gather_rng()
    averaged = ema.full_state() if ema is not None else None
    if _rank() != 0:
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    plain_model.load_state_dict(model_sd, strict=True, assign=True)
    plain_model.save_pretrained(folder / MODEL_DIR)
    tensors = {f"{name}/{key}": value.detach().contiguous() for name, moments in optim_sd["state"].items()
               for key, value in moments.items()}
    save_file(tensors, str(folder / OPTIMIZER_FILE), metadata={"format": FORMAT})
    save_file({f"rank{r}/{k}": state[k] for r, state in enumerate(rngs) for k in ("cpu", "cuda") if k in state},
              str(folder / RNG_FILE), metadata={"format": FORMAT})
    if averaged is not None:
        save_file(averaged, str(folder / EMA_FILE), metadata={"format": FORMAT})
    meta = {"format": FORMAT, "version": VERSION, "step": step, "world_size": len(rngs),
            "scheduler": scheduler.state_dict(), "param_groups": optim_sd["param_groups"],
            "data_position": data_position,
            "rng": [{"python": s["python"], "numpy": s["numpy"]} for s in rngs]}
    tmp = folder / f"{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(meta))
    tmp.replace(folder / STATE_FILE)  # state.json last: its presence marks a complete checkpoint
    return folder


# --------------------------------------------------------------------------- load


def read_state_json(folder: str | Path) -> dict[str, Any]:
    """The checkpoint's state.json, checked for format and version (errors name the file)."""
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; {folder} is not a complete training checkpoint")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{path}: not a {FORMAT} v{VERSION} checkpoint (got {meta.get('format')} "
                         f"v{meta.get('version')})")
    return meta


def _optimizer_state(folder: Path, param_groups: list[dict]) -> dict[str, Any]:
    state: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(folder / OPTIMIZER_FILE)).items():
        name, _, moment = key.rpartition("/")
        state.setdefault(name, {})[moment] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in param_groups]
    return {"state": state, "param_groups": groups}


def load_train_state(folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     scheduler: torch.optim.lr_scheduler.LRScheduler, ema: WeightEMA | None = None) -> RestoredState:
    """Restore a checkpoint written by `save_train_state` into the live objects (every rank calls it).

    Each rank restores its own RNG state when the world size is unchanged; after a resize the ranks
    reseed from (step, rank), since a rank's old stream no longer exists. With `ema`, the average is
    restored from the checkpoint's `ema.safetensors`.
    """
    folder = Path(folder)
    meta = read_state_json(folder)
    if ema is not None:
        path = folder / EMA_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; the stage keeps a weight average (ema_decay > 0) but "
                                    "this checkpoint was written without one")
        ema.load_full_state(load_file(str(path)), str(path))
    weights = load_file(str(folder / MODEL_DIR / "model.safetensors"))
    set_state_dict(model, optimizer, model_state_dict=weights,
                   optim_state_dict=_optimizer_state(folder, meta["param_groups"]),
                   options=StateDictOptions(full_state_dict=True))
    scheduler.load_state_dict(meta["scheduler"])
    rank = _rank()
    if meta["world_size"] == _world():
        tensors = load_file(str(folder / RNG_FILE))
        state = dict(meta["rng"][rank])
        state.update({k: tensors[f"rank{rank}/{k}"] for k in ("cpu", "cuda") if f"rank{rank}/{k}" in tensors})
        set_rng_state(state)
    else:
        seed = meta["step"] * 1009 + rank
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
    return RestoredState(step=int(meta["step"]), data_position=meta["data_position"])
