"""UP-VLA model speed: training-step throughput and replanning latency, fp32 vs bf16, against a matmul ceiling.

Measured in one run, at the sizes of params.yaml (or --profile/--preset/--set):
* the machine's matmul ceiling, GFLOP/s (square fp32 and bf16 products), the baseline of every fraction;
* a training step (forward + backward + AdamW) on a `tune`-shaped batch: robot samples/s, achieved
  GFLOP/s (FLOPs counted by torch's FlopCounterMode) and its fraction of the ceiling, fp32 and bf16;
* one replan (VQ-encode the camera frames the model reads, CLIP, one backbone forward, MAP head) for 1
  and for `evaluate.num_workers` environments: latency and actions/s amortised over the chunk;
* one scene description (greedy, KV cache; once per subtask).

    .venv/bin/python benchmarks/model_step.py                 # CPU default
    .venv/bin/python benchmarks/model_step.py --device cuda --profile paper
    .venv/bin/python benchmarks/model_step.py --smoke         # seconds: profiles/smoke.yaml, 1 repeat
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from components.core.config import add_config_args, config_from_args
from model.batches import IGNORE, MMUBatch, RobotBatch, TrainBatch, clip_pixels, vq_pixels
from model.losses import LossWeights
from model.vla import VLAModel, bf16_autocast

INSTRUCTION_TOKENS, DESCRIPTION_TOKENS, MMU_TOKENS = 14, 30, 40  # typical lengths with the small BPE
CAMERA_SIDES = (200, 84)  # CALVIN's static and gripper frames, px
# --smoke: the same measurements at sizes that take seconds; explicit flags still win
SMOKE = ["--profile", "smoke", "--repeats", "1", "--warmup", "1"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median seconds of `fn()` over `repeats` runs after `warmup` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, device, repeats=5) / 1e9


def robot_batch(model: VLAModel, n: int, conditioned: bool, device: torch.device) -> RobotBatch:
    cfg, g = model.cfg, torch.Generator().manual_seed(0)
    codes = lambda: torch.randint(0, cfg.vq.codebook_size, (n, cfg.num_views * cfg.vq.tokens_per_image), generator=g)  # noqa: E731
    text = lambda k: torch.randint(0, model.layout.eos_id, (n, k), generator=g)  # noqa: E731
    actions = torch.rand(n, cfg.chunk_len, cfg.action_dim, generator=g) * 2 - 1
    frames = torch.randint(0, 256, (n, 200, 200, 3), dtype=torch.uint8, generator=g)
    batch = RobotBatch(text(INSTRUCTION_TOKENS), codes(), codes(), actions,
                       scene_pixels=clip_pixels(frames, cfg.vision_image_size) if conditioned else None,
                       description_ids=text(DESCRIPTION_TOKENS) if conditioned else None,
                       robot_obs=torch.randn(n, 15, generator=g) if cfg.proprio else None)
    return batch.to(device)


def mmu_batch(model: VLAModel, n: int, device: torch.device) -> MMUBatch | None:
    if n == 0:
        return None
    ids = torch.randint(0, model.layout.eos_id, (n, MMU_TOKENS))
    labels = ids.clone()
    labels[:, : MMU_TOKENS // 2] = IGNORE
    pixels = torch.randn(n, 3, model.cfg.vision_image_size, model.cfg.vision_image_size)
    return MMUBatch(pixels, ids, labels).to(device)


def bench_training(model, batch, weights, device, repeats: int) -> tuple[dict[bool, float], float]:
    """Median seconds per step (forward + backward + AdamW) for fp32 and bf16, and FLOPs per step.

    fp32 and bf16 steps alternate, so both meet the same background load on a shared machine.
    """
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step(bf16: bool) -> None:
        with bf16_autocast(device, bf16):
            loss, _ = model(batch, weights)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step(False)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(repeats + 1):
        for bf16 in (False, True):
            seconds = timed(lambda b=bf16: step(b), device, repeats=1, warmup=0)
            if i > 0:  # the first round warms both paths up
                times[bf16].append(seconds)
    return {bf16: statistics.median(t) for bf16, t in times.items()}, counter.get_total_flops()


def bench_replan(model, n: int, conditioned: bool, device, bf16: bool, repeats: int, warmup: int) -> float:
    """Seconds of one replan for n environments, from uint8 frames to the action chunk."""
    cfg = model.cfg
    views = [torch.randint(0, 256, (n, side, side, 3), dtype=torch.uint8).to(device)
             for side in CAMERA_SIDES[: cfg.num_views]]
    base = robot_batch(model, n, conditioned, device)

    def replan():
        with torch.no_grad(), bf16_autocast(device, bf16):
            codes = torch.cat([model.vq.encode(vq_pixels(v, cfg.vq.image_size)) for v in views], dim=1)
            scene = clip_pixels(views[0], cfg.vision_image_size) if conditioned else None
            inputs = RobotBatch(base.instruction_ids, codes, scene_pixels=scene, description_ids=base.description_ids,
                                robot_obs=base.robot_obs)
            return model.predict(inputs, bf16=bf16).actions

    return timed(replan, device, repeats, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per figure (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before each replan/description figure")
    parser.add_argument("--smoke", action="store_true", help=f"tiny sizes, seconds: {' '.join(SMOKE)}")
    args = parser.parse_args()
    if args.smoke:
        args = parser.parse_args([*SMOKE, *sys.argv[1:]])
    project = config_from_args(args)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = VLAModel(project.model).to(device)
    tune = project.tune
    weights = LossWeights(mmu=tune.lambda_mmu, pre=tune.lambda_pre, act=tune.lambda_act)
    batch = TrainBatch(robot_batch(model, tune.batch_size, tune.mmu_condition, device),
                       mmu_batch(model, tune.mmu_batch_size, device))
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"device {device}, torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f}, "
          f"model {params:.1f}M params, preset {project.experiment.preset}")
    ceilings = {False: matmul_ceiling(device, torch.float32), True: matmul_ceiling(device, torch.bfloat16)}
    print(f"matmul ceiling 2048^2: fp32 {ceilings[False]:.0f} GFLOP/s, bf16 {ceilings[True]:.0f} GFLOP/s")

    print(f"training step: {tune.batch_size} robot (mmu_condition={tune.mmu_condition}) + "
          f"{tune.mmu_batch_size} MMU samples, lambda {weights}")
    step_times, flops = bench_training(model, batch, weights, device, args.repeats)
    for bf16, seconds in step_times.items():
        achieved = flops / seconds / 1e9
        print(f"  {'bf16' if bf16 else 'fp32'}: {seconds * 1e3:7.1f} ms/step, {tune.batch_size / seconds:6.1f} "
              f"robot samples/s, {flops / 1e9:.1f} GFLOP/step, {achieved:.0f} GFLOP/s = "
              f"{achieved / ceilings[bf16]:.0%} of the {'bf16' if bf16 else 'fp32'} ceiling")
    print(f"  bf16 / fp32 speed-up: {step_times[False] / step_times[True]:.2f}x")
    print(f"load after training: {os.getloadavg()[0]:.2f}")

    model.eval()
    envs = sorted({1, project.evaluate.num_workers})
    print(f"replan (VQ encode + forward), chunk of {project.model.chunk_len} actions:")
    for n in envs:
        for bf16 in (False, True):
            seconds = bench_replan(model, n, tune.mmu_condition, device, bf16, args.repeats, args.warmup)
            print(f"  {n} env(s) {'bf16' if bf16 else 'fp32'}: {seconds * 1e3:7.1f} ms/replan, "
                  f"{n * project.model.chunk_len / seconds:7.1f} actions/s amortised")
    if tune.mmu_condition:
        pixels = batch.robot.scene_pixels[:1]
        prompt = batch.robot.instruction_ids[:1, :6]
        for bf16 in (False, True):
            seconds = timed(lambda b=bf16: model.generate_description(pixels, prompt, bf16=b), device, args.repeats,
                            args.warmup)
            print(f"  scene description ({project.model.max_description_len} tokens max, KV cache, once per "
                  f"subtask) {'bf16' if bf16 else 'fp32'}: {seconds * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
