"""`tokenizer` stage: the VQ image tokenizer and the text tokenizer, fitted here or loaded, saved for later stages.

The VQ tokenizer is fitted on the ingested frames (or loaded from `tokenizer.pretrained`: a folder of ours, or
Show-o's published MagVIT-v2 folder, which model.vq.arch `magvitv2` needs: it is never fitted here); the text
tokenizer is built from the ingested texts (or loaded from `tokenizer.text_pretrained`).

    artifacts/vq/               save_pretrained of either arch (vq_config.json + vq.safetensors; model.vq.load_vq)
    artifacts/text_tokenizer/   a transformers fast tokenizer of model.text_vocab_size ids

Fitting holds `tokenizer.max_frames` frames (evenly spaced over the frames table, decoded and resized to
vq.image_size) in memory and keeps `tokenizer.eval_frames` others out to measure reconstruction PSNR;
losses and PSNR go to MLflow every `log_every` steps, with a titled grid of held-out originals (top row)
and their reconstructions (bottom row) at the end.

    summary = prepare_tokenizers(cfg.tokenizer, cfg.model, Path("data/ingested"), Path("artifacts"), seed=0)
    python -m workflows.tokenizer                    # the DVC stage
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from components.core.config import TokenizerConfig
from components.core.picture_labels import label_grid
from components.core.threads import ThreadGuard
from components.core.tracking import NULL_LOGGER, MetricLogger
from components.data.conversation import DESCRIBE_PROMPT, answer_text, prompt_text
from components.data.tables import FRAMES, VQA, WINDOWS, decode_image, part_files, read_table
from model.batches import vq_pixels
from model.config import ModelConfig, VQConfig
from model.vocab import build_text_tokenizer, load_text_tokenizer
from model.vq import VQModel, build_vq, is_published_magvitv2, load_magvitv2, load_vq


@dataclass(frozen=True)
class TokenizerSummary:
    """What the stage produced (also `metrics/tokenizer.json`)."""

    fitted: bool
    steps: int
    frames_fitted: int
    # held-out reconstruction PSNR at the end, dB (images in [0, 1])
    psnr_db: float
    # fraction of the codebook the held-out frames use
    code_usage: float
    text_vocab_size: int


def select_rows(total: int, fit: int, held_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced, disjoint row indices: (fit rows, held-out rows) out of `total`."""
    held = np.unique(np.linspace(0, total - 1, min(held_out, total)).round().astype(np.int64))
    rest = np.setdiff1d(np.arange(total), held)
    if len(rest) == 0:
        raise ValueError(f"tokenizer: {total} frames leave nothing to fit on after holding out {len(held)}")
    pick = np.unique(np.linspace(0, len(rest) - 1, min(fit, len(rest))).round().astype(np.int64))
    return rest[pick], held


def load_frames(frames_dir: Path, rows: np.ndarray, column: str, size: int) -> torch.Tensor:
    """Decode the images of the given global row indices, resized for the VQ tokenizer.

    Returns:
        (n, 3, size, size) float in [-1, 1], in row order (rows whose image is null are left out).
    """
    threads = torch.get_num_threads()
    # one frame per call is far too small to split: with 2 threads on a busy machine each resize waits on
    # the other thread (15.6 vs 0.5 ms a frame measured at load 7 on 2 cores)
    torch.set_num_threads(1)
    try:
        return _decode_frames(frames_dir, np.sort(rows), column, size)
    finally:
        torch.set_num_threads(threads)


def _decode_frames(frames_dir: Path, wanted: np.ndarray, column: str, size: int) -> torch.Tensor:
    out, start = [], 0
    for path in tqdm(part_files(frames_dir), desc=f"decode {column}", unit="file"):
        n = pq.ParquetFile(path).metadata.num_rows
        local = wanted[(wanted >= start) & (wanted < start + n)] - start
        if len(local):
            blobs = pq.read_table(path, columns=[column]).column(column).take(local).to_pylist()
            # one by one: Bridge and CALVIN frames differ in size; Bridge has no gripper view (null)
            out += [vq_pixels(torch.from_numpy(decode_image(b))[None], size) for b in blobs if b is not None]
        start += n
    if not out:
        raise ValueError(f"tokenizer: no {column} images among the selected rows of {frames_dir}")
    return torch.cat(out)


def psnr(images: torch.Tensor, recon: torch.Tensor) -> float:
    """PSNR in dB of reconstructions of [-1, 1] images, measured on [0, 1]."""
    mse = ((images - recon) / 2).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def image_grid(images: torch.Tensor, recon: torch.Tensor, count: int = 8, *, steps: int | None = None,
               psnr_db: float | None = None) -> np.ndarray:
    """(H, W, 3) uint8 grid: originals on the top row, their reconstructions below, titled and labelled.

    Args:
        images: (n, 3, S, S) held-out static-camera frames in [-1, 1].
        recon: (n, 3, S, S) their reconstructions.
        count: frames shown (columns).
        steps: fitting steps behind the tokenizer, for the title (0: loaded pretrained, None: not stated).
        psnr_db: held-out PSNR, for the title.
    """
    shown = min(count, len(images))
    rows = [torch.cat(list(x[:shown]), dim=2) for x in (images, recon)]
    grid = ((torch.cat(rows, dim=1).permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    fitted = "" if steps is None else (" (pretrained, not fitted)" if steps == 0 else f" after {steps} fitting steps")
    quality = "" if psnr_db is None else f", PSNR {psnr_db:.1f} dB over all held-out frames"
    title = f"VQ tokenizer{fitted}: held-out static-camera frames (top) and their reconstructions (bottom){quality}"
    side = images.shape[-1]
    return label_grid(grid, title=title, columns=[((i + 0.5) * side, f"held-out {i}") for i in range(shown)],
                      rows=[(side / 2, "original"), (1.5 * side, "reconstructed")])


def evaluate_vq(tok: VQModel, images: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """(PSNR dB, codebook fraction used, reconstructions) on held-out images."""
    tok.eval()
    codes = torch.cat([tok.encode(images[i:i + 64]) for i in range(0, len(images), 64)])
    recon = torch.cat([tok.decode(codes[i:i + 64]) for i in range(0, len(codes), 64)])
    tok.train()
    return psnr(images, recon), codes.unique().numel() / tok.quantizer.codebook_size, recon


def fit_vq(cfg: TokenizerConfig, tok: VQModel, train: torch.Tensor, held: torch.Tensor, seed: int,
           log: MetricLogger) -> None:
    """AdamW on reconstruction + LFQ terms, random batches of `train`; logs losses and held-out PSNR."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(tok.parameters(), lr=cfg.lr)
    tok.train()
    guard = ThreadGuard(name="fit VQ tokenizer")  # fewer threads while other processes take the cores
    for step in tqdm(range(1, cfg.steps + 1), desc="fit VQ tokenizer", unit="step"):
        guard.tick()
        batch = train[torch.randint(len(train), (cfg.batch_size,), generator=gen)]
        loss, metrics = tok.training_loss(batch, entropy_weight=cfg.entropy_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % cfg.log_every == 0 or step == cfg.steps:
            value, usage, _ = evaluate_vq(tok, held)
            log.log_metrics({**{f"vq/{k}": v.item() for k, v in metrics.items()}, "vq/loss": loss.item(),
                             "vq/psnr_db": value, "vq/heldout_code_usage": usage}, step=step)


def load_pretrained_vq(folder: str | Path, vq_cfg: VQConfig) -> VQModel:
    """`tokenizer.pretrained`: a folder of ours (either arch) or Show-o's published MagVIT-v2, checked against model.vq.

    Raises:
        ValueError: naming tokenizer.pretrained (or the model.vq key and the file) when it does not hold model.vq.
    """
    if is_published_magvitv2(folder):
        return load_magvitv2(folder, vq_cfg)
    tok = load_vq(folder)
    if tok.cfg != vq_cfg:
        raise ValueError(f"tokenizer.pretrained: {folder} holds {tok.cfg}, but model.vq is {vq_cfg}")
    return tok


def prepare_vq(cfg: TokenizerConfig, model_cfg: ModelConfig, frames_dir: Path, out_dir: Path, *, seed: int,
               log: MetricLogger = NULL_LOGGER) -> TokenizerSummary:
    """Fit (or load) the VQ tokenizer, save it to `out_dir`, log PSNR and the reconstruction grid."""
    if model_cfg.vq.arch == "magvitv2" and not cfg.pretrained:
        raise ValueError("tokenizer.pretrained: model.vq.arch `magvitv2` is Show-o's published MagVIT-v2, which this "
                         "stage does not fit; set tokenizer.pretrained to its folder (config.json + "
                         "pytorch_model.safetensors or .bin)")
    total = sum(pq.ParquetFile(p).metadata.num_rows for p in part_files(frames_dir))
    fit_rows, held_rows = select_rows(total, cfg.max_frames, cfg.eval_frames)
    size = model_cfg.vq.image_size
    held = load_frames(frames_dir, held_rows, "rgb_static", size)
    if cfg.pretrained:
        tok = load_pretrained_vq(cfg.pretrained, model_cfg.vq)
        train_count = 0
    else:
        torch.manual_seed(seed)
        tok = build_vq(model_cfg.vq)
        train = load_frames(frames_dir, fit_rows, "rgb_static", size)
        if model_cfg.num_views == 2:  # the same tokenizer encodes the gripper view
            train = torch.cat([train, load_frames(frames_dir, fit_rows, "rgb_gripper", size)])
        train_count = len(train)
        fit_vq(cfg, tok, train, held, seed, log)
    value, usage, recon = evaluate_vq(tok, held)
    log.log_image(image_grid(held, recon, steps=0 if cfg.pretrained else cfg.steps, psnr_db=value),
                  "tokenizer/reconstructions.png")
    tok.save_pretrained(out_dir)
    return TokenizerSummary(fitted=not cfg.pretrained, steps=0 if cfg.pretrained else cfg.steps,
                            frames_fitted=train_count, psnr_db=value, code_usage=usage,
                            text_vocab_size=model_cfg.text_vocab_size)


def corpus(ingested_dir: Path) -> list[str]:
    """Every text the model reads or writes, as it will see it: instructions, descriptions, MMU turns."""
    texts = set(read_table(ingested_dir / WINDOWS, columns=["instruction"]).column("instruction").to_pylist())
    frames = read_table(ingested_dir / FRAMES, columns=["description"]).column("description").to_pylist()
    texts.update(t for t in frames if t)
    texts.add(DESCRIBE_PROMPT)
    if any((ingested_dir / VQA).glob("*.parquet")):
        vqa = read_table(ingested_dir / VQA, columns=["questions", "answers"])
        turns = zip(vqa.column("questions").to_pylist(), vqa.column("answers").to_pylist(), strict=True)
        for questions, answers in turns:
            texts.update(prompt_text(q, first=i == 0) for i, q in enumerate(questions))
            texts.update(answer_text(a) for a in answers)
    return sorted(texts)  # sorted: the BPE merges do not depend on file order


def prepare_text_tokenizer(cfg: TokenizerConfig, model_cfg: ModelConfig, ingested_dir: Path, out_dir: Path):
    """Load `tokenizer.text_pretrained` or build a BPE on the ingested texts; save it to `out_dir`."""
    if cfg.text_pretrained:
        tok = load_text_tokenizer(cfg.text_pretrained, model_cfg.text_vocab_size)
    else:
        tok = build_text_tokenizer(corpus(ingested_dir), model_cfg.text_vocab_size)
    tok.save_pretrained(str(out_dir))
    return tok


def prepare_tokenizers(cfg: TokenizerConfig, model_cfg: ModelConfig, ingested_dir: Path, out_dir: Path, *,
                       seed: int, log: MetricLogger = NULL_LOGGER) -> TokenizerSummary:
    """The stage: `out_dir/vq` and `out_dir/text_tokenizer` from the ingest stage's tables."""
    prepare_text_tokenizer(cfg, model_cfg, ingested_dir, out_dir / "text_tokenizer")
    return prepare_vq(cfg, model_cfg, ingested_dir / FRAMES, out_dir / "vq", seed=seed, log=log)
