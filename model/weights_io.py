"""Reading weight files of published checkpoints, and the one key check every loader applies.

A `.safetensors` file is read lazily, one tensor at a time (the published Show-o file is 5.8 GB); a `.bin`
is a pickle and is only ever read with `torch.load(weights_only=True)`, which refuses anything but tensors
and plain containers. Every error names the file.

    shapes, read = open_state(path)          # names -> shapes, and a reader of one tensor
    check_keys(path, shapes, expected, "a Show-o model at model's sizes")
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

Shapes = dict[str, tuple[int, ...]]


def open_state(path: str | Path) -> tuple[Shapes, Callable[[str], Tensor]]:
    """The names and shapes of a weights file, and a function returning one tensor.

    A safetensors file is streamed; a `.bin` is loaded once (weights_only) and each tensor is handed over
    and dropped by the reader, so a caller copying tensor by tensor never holds two copies of the file.

    Raises:
        ValueError: naming `path`, for a truncated or corrupt file or anything but a flat dict of tensors.
    """
    path = Path(path)
    if path.suffix == ".bin":
        state = read_bin(path)
        return {k: tuple(v.shape) for k, v in state.items()}, state.pop
    try:
        handle = safe_open(str(path), framework="pt", device="cpu")
        return {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}, handle.get_tensor
    except SafetensorError as err:
        raise ValueError(f"{path}: not a readable safetensors file, truncated or corrupt ({err})") from err


def read_state(path: str | Path) -> dict[str, Tensor]:
    """Every tensor of a weights file (`.safetensors` or `.bin`), in memory."""
    shapes, read = open_state(path)
    return {k: read(k) for k in shapes}


def read_bin(path: str | Path) -> dict[str, Tensor]:
    """A torch `.bin` state dict, read with `weights_only=True` (no code in the pickle can run).

    The tensors are memory-mapped when the file is torch's zip format (every `torch.save` since 1.6): a
    multi-GB file opens at once and a tensor is read from disk when it is used.
    """
    path = Path(path)
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # the legacy (pre-zip) format cannot be mapped: read it whole
            if "mmap" not in str(err):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's own text goes on to suggest weights_only=False: not here
        reason = next((line.strip() for line in str(err).splitlines() if "WeightsUnpickler error" in line), "")
        raise ValueError(f"{path}: refused by torch.load(weights_only=True), it holds more than tensors "
                         f"({reason or type(err).__name__}); a checkpoint is only ever read this way") from err
    except (RuntimeError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a readable torch state dict, truncated or corrupt ({err})") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a flat state dict of tensors, got {type(state).__name__}")
    return dict(state)


def check_keys(path: str | Path, shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
               what: str) -> None:
    """One error naming `path` and every missing, unexpected and mis-shaped key; nothing when they fit.

    Args:
        path: the file the keys came from (named in the error).
        shapes: the file's keys and shapes.
        expected: the keys and shapes the target needs.
        what: what the weights must fit, for the message (e.g. "a Show-o model at model's sizes").
    """
    missing, unexpected = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    wrong = [f"{k}: {list(shapes[k])} in the file, {list(v)} expected" for k, v in expected.items()
             if k in shapes and tuple(shapes[k]) != tuple(v)]
    if missing or unexpected or wrong:
        raise ValueError(f"{path}: the weights do not fit {what}: missing {missing}, unexpected {unexpected}, "
                         f"mis-shaped {wrong}")
