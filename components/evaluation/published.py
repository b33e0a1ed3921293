"""Published checkpoints converted into the folders our stages read, written all at once or not at all.

* UP-VLA-Calvin (the authors' tuned policy) -> a checkpoint folder `evaluate` runs as any of ours:
  `VLAModel.save_pretrained` + tokenizer/ + policy.json (no MMU-conditioned prompt). Its config is theirs
  (model/published.py `release_config`), so the same folder evaluated on our Ray actors is their model.
* Show-o's MagVIT-v2 -> our VQ folder (what the `tokenizer` stage writes from `tokenizer.pretrained`).

A conversion writes into a hidden staging folder beside the target and renames it when everything is
written; on any error the staging folder is removed, and an existing target is never touched.

    python -m workflows.checkpoints convert checkpoints/UP-VLA-Calvin checkpoints/upvla-calvin-ours \
        --vq checkpoints/magvitv2 --clip checkpoints/clip-vit-large-patch14-336 --tokenizer checkpoints/phi-1_5
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from components.evaluation.policy import PolicySettings, save_policy_settings
from model.config import VQConfig
from model.published import REFERENCE_MAX_TEXT_LEN, load_upvla
from model.vq import SIZE_FIELDS, load_magvitv2, published_sizes, published_weights
from model.weights_io import read_state


def convert_release(source: str | Path, out: str | Path, *, vq: str | Path, clip: str | Path, tokenizer: str | Path,
                    showo: str | Path | None = None, max_text_len: int = REFERENCE_MAX_TEXT_LEN,
                    progress: bool = True) -> Path:
    """Write the authors' UP-VLA-Calvin checkpoint as our checkpoint folder `out` (see model.published.load_upvla).

    Raises:
        FileExistsError: `out` exists (nothing is overwritten).
        FileNotFoundError, ValueError: from loading, naming the file and the key; nothing is written.
    """
    out = _free(out)
    model = load_upvla(source, vq=vq, clip=clip, tokenizer=tokenizer, showo=showo, max_text_len=max_text_len,
                       progress=progress)

    def write(folder: Path) -> None:
        model.save_pretrained(folder)
        save_policy_settings(folder, PolicySettings(mmu_condition=False))

    return _staged(out, write)


def convert_magvitv2(source: str | Path, out: str | Path, *, image_size: int = 512) -> Path:
    """Write Show-o's MagVIT-v2 folder as our VQ folder (vq_config.json + vq.safetensors) for `image_size` px.

    Raises:
        FileExistsError: `out` exists.
        FileNotFoundError, ValueError: from loading, naming the file and the key; nothing is written.
    """
    out = _free(out)
    path = published_weights(Path(source))
    sizes = published_sizes(read_state(path))
    unread = [name for name in SIZE_FIELDS if name not in sizes]
    if unread or len(sizes["channel_mult"]) < 2:
        raise ValueError(f"{path}: cannot read {unread or ['channel_mult']} from the weights (conv_in, "
                         "quantize.embedding, encoder.down.N / decoder.up.N blocks): not a MagVIT-v2 state dict")
    downsample = 2 ** (len(sizes["channel_mult"]) - 1)
    if image_size % downsample:
        raise ValueError(f"--image-size: {image_size} px is not a multiple of the tokenizer's {downsample}x "
                         "downsampling")
    cfg = VQConfig(arch="magvitv2", image_size=image_size, downsample=downsample, num_res_blocks=None, **sizes)
    tokenizer = load_magvitv2(source, cfg)
    return _staged(out, tokenizer.save_pretrained)


def _free(out: str | Path) -> Path:
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; nothing is overwritten (name a new folder)")
    return out


def _staged(out: Path, write: Callable[[Path], None]) -> Path:
    """Run `write` into a staging folder beside `out`, then rename it to `out`; remove it on any error."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write(staging)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
