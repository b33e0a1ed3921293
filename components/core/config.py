"""Typed project configuration: `params.yaml` -> frozen dataclasses, with key-path errors.

`params.yaml` is the embedded CPU default. Three overlays can change it, all through one
merge mechanism, and every key they name must already exist:

* a **profile** file (`profiles/<name>.yaml`, e.g. `paper`), nested YAML merged on top;
* a **preset** (`experiment.preset`, one of `params.yaml`'s `presets:`), dotted overrides;
* command-line **overrides** (`--set tune.lr=3e-4`).

Unknown keys, missing keys, wrong types, non-finite numbers (NaN, ±inf) and out-of-range values raise
`ConfigError` naming the key path, e.g. ``tune.lambda_act: must be >= 0, got -1``.

Run:
    python -m components.core.config                      # print the resolved default
    python -m components.core.config --profile paper --preset no_mmu --set tune.lr=3e-4
    python -m components.core.config --profile paper --write params.paper.yaml
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from envs.config import EnvConfig
from envs.franka.config import FrankaConfig
from model.config import ModelConfig

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROFILES_DIR = PROJECT_ROOT / "profiles"
# robot datasets the ingest stage writes frames and language windows for
ROBOT_SOURCES = ("calvin", "bridge")
# the raw datasets the ingest stage reads
INGEST_SOURCES = ("calvin", "bridge", "llava")
PRESET_NAMES = ("full", "no_mmu", "no_bridge_pretrain", "no_prediction", "no_mmu_condition", "rt2", "phi_no_mmu")


class ConfigError(ValueError):
    """A configuration value is unknown, missing, mistyped or out of range; the message names the key."""


def _f(default: Any = dataclasses.MISSING, **constraints: Any) -> Any:
    """A dataclass field with range constraints (`ge`, `gt`, `le`, `lt`) checked by the loader."""
    return field(default=default, metadata=constraints)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ExperimentConfig:
    """What is being run: the preset and the seed shared by every stage."""

    # ablation/baseline preset applied on top of the parameter file and the profile; one of `presets`
    preset: str
    # global seed: data order, initialisation, evaluation noise
    seed: int = _f(ge=0)


@dataclass(frozen=True)
class CollectConfig:
    """`collect`: scripted-expert demonstrations written in CALVIN, Bridge and LLaVA formats."""

    # seed of the whole collection: every job's seed derives from it (episode layouts, task order, sentence choice)
    seed: int = _f(ge=0)
    # parallel collection processes
    num_workers: int = _f(ge=1)
    # scenes whose play episodes form CALVIN `training/`
    train_scenes: tuple[str, ...]
    # scenes whose play episodes form CALVIN `validation/`
    val_scenes: tuple[str, ...]
    # play episodes per training scene
    episodes_per_scene: int = _f(ge=1)
    # play episodes per validation scene
    val_episodes_per_scene: int = _f(ge=1)
    # expert subtasks chained in one play episode
    tasks_per_episode: int = _f(ge=1)
    # chance of an articulated task (door, drawer, LED, bulb; 8 of CALVIN's 34) relative to a block task when drawing
    # the next one among the valid tasks (1: uniform)
    articulated_weight: float = _f(gt=0)
    # Bridge-format prediction-only videos: one expert task each, with random colours and camera pose (settings the
    # evaluation never sees)
    bridge_videos: int = _f(ge=0)
    # LLaVA-format images, each with a scene description and llava_questions more question/answer turns
    llava_images: int = _f(ge=0)
    # questions per LLaVA image besides "Describe the scene."
    llava_questions: int = _f(ge=0)
    # control steps between the kept frames of a Bridge video (30 Hz / stride)
    bridge_frame_stride: int = _f(ge=1)
    # frames of a CALVIN language window (the annotator's 64; it may start up to 31 frames later, and the
    # task fires in its last 15 frames: components/collection/calvin_recorder.py)
    window: int = _f(ge=48)
    # frames between the ends of candidate windows
    window_stride: int = _f(ge=1)
    # write CALVIN's depth_static/depth_gripper (float32, ~100 KB a frame compressed; nothing trains on depth)
    depth: bool

    def validate(self) -> None:
        """Scenes are CALVIN's A-D."""
        for key in ("train_scenes", "val_scenes"):
            scenes = getattr(self, key)
            if not scenes or not set(scenes) <= set("ABCD"):
                raise ValueError(f"{key}: expected a non-empty list of scenes A-D, got {list(scenes)}")


@dataclass(frozen=True)
class IngestConfig:
    """`ingest`: raw CALVIN/Bridge/LLaVA folders -> validated Parquet tables."""

    # the datasets to ingest, any of calvin, bridge, llava; one left out is absent (its *_dir is not read), while
    # a listed one that holds no records is an error
    sources: tuple[str, ...]
    # CALVIN dataset folder (with training/ and validation/); null = the folder `collect` writes
    calvin_dir: str | None
    # BridgeData v2 raw folder; null = the folder `collect` writes
    bridge_dir: str | None
    # LLaVA-665k folder (JSON + images); null = the folder `collect` writes
    llava_dir: str | None
    # the stage fails when a table loses more than this fraction of its records to quarantine
    max_bad_fraction: float = _f(ge=0.0, le=1.0)
    # rows per Parquet file (the unit of parallel reads)
    rows_per_file: int = _f(ge=1)

    def validate(self) -> None:
        """`sources` names each dataset at most once, at least one."""
        sources = self.sources
        if not sources or len(set(sources)) != len(sources) or not set(sources) <= set(INGEST_SOURCES):
            raise ValueError(f"sources: expected distinct names among {list(INGEST_SOURCES)}, at least one, "
                             f"got {sources}")


@dataclass(frozen=True)
class TokenizerConfig:
    """`tokenizer`: fit the VQ image tokenizer on ingested frames, or load a pretrained folder."""

    # pretrained VQ tokenizer folder: Show-o's published `magvitv2` (model.vq.arch magvitv2) or our save_pretrained
    # format; null = fit one on the ingested frames
    pretrained: str | None
    # optimisation steps when fitting
    steps: int = _f(ge=1)
    # images per step
    batch_size: int = _f(ge=1)
    # AdamW learning rate
    lr: float = _f(gt=0.0)
    # weight of the LFQ entropy term (the commitment term has a fixed weight of 0.25)
    entropy_weight: float = _f(ge=0.0)
    # frames (evenly spaced over the ingested frames table) decoded into memory to fit on
    max_frames: int = _f(ge=1)
    # frames held out of fitting (evenly spaced, disjoint from the fitted ones) whose reconstruction PSNR (dB) is logged
    eval_frames: int = _f(ge=1)
    # log losses and held-out PSNR every this many steps
    log_every: int = _f(ge=1)
    # text tokenizer folder (a saved transformers fast tokenizer, e.g. Phi-1.5's); null = train a byte-level
    # BPE of model.text_vocab_size ids on the ingested instructions, descriptions and VQA texts
    text_pretrained: str | None


@dataclass(frozen=True)
class PretokenizeConfig:
    """`pretokenize`: every frame -> VQ codes with Ray Data, sharded Parquet."""

    # frames per encoding call of an actor
    batch_size: int = _f(ge=1)
    # CPUs Ray reserves per encoding actor; it encodes with one torch thread per whole CPU, at least one
    cpus_per_worker: float = _f(gt=0.0)
    # encoding actors (Ray Data ActorPoolStrategy size)
    num_workers: int = _f(ge=1)
    # frames per output shard, the unit of resume (a re-run skips finished shards)
    shard_size: int = _f(ge=1)
    # GPUs per encoding actor (0 = encode on CPU); the cluster must have num_workers x this many
    gpus_per_worker: float = _f(ge=0.0)


@dataclass(frozen=True)
class TrainConfig:
    """`pretrain` (stage 1) and `tune` (stage 2): one loop, two parameter sets."""

    # where the weights start: `backbone` (the Phi and CLIP folders of `model`, or random init at the model sizes) or
    # `pretrain` (stage 1's model, artifacts/pretrain/model)
    init_from: Literal["backbone", "pretrain"]
    # optimiser steps (each one = grad_accum micro-batches on every worker)
    steps: int = _f(ge=1)
    # robot (PRE/ACT) samples per worker per micro-batch, not global
    batch_size: int = _f(ge=1)
    # understanding (MMU) samples per worker per micro-batch; 0 = no VQA data (lambda_mmu must then be 0)
    mmu_batch_size: int = _f(ge=0)
    # micro-batches accumulated per optimiser step
    grad_accum: int = _f(ge=1)
    # peak AdamW learning rate
    lr: float = _f(gt=0.0)
    # AdamW decoupled weight decay on weight matrices (not biases, norms, embeddings or the MAP head's latent query)
    weight_decay: float = _f(ge=0.0)
    # linear warm-up, optimiser steps; then cosine decay to min_lr_ratio * lr
    warmup_steps: int = _f(ge=0)
    # floor of the cosine schedule, as a fraction of lr
    min_lr_ratio: float = _f(ge=0.0, le=1.0)
    # decay of the exponential moving average of the trained weights that the stage exports (0 = the last weights)
    ema_decay: float = _f(ge=0.0, lt=1.0)
    # fraction of the current frame's VQ codes (input only) replaced by random codes in every robot sample (0 = none)
    code_noise: float = _f(ge=0.0, lt=1.0)
    # global gradient-norm clip; 0 disables clipping
    clip_grad_norm: float = _f(ge=0.0)
    # bf16 autocast for matrix math
    bf16: bool
    # recompute activations in backward: less memory, ~30% more time
    grad_checkpointing: bool
    # weight of the understanding loss L_MMU
    lambda_mmu: float = _f(ge=0.0)
    # weight of the future-prediction loss L_PRE
    lambda_pre: float = _f(ge=0.0)
    # weight of the action loss L_ACT
    lambda_act: float = _f(ge=0.0)
    # robot (PRE/ACT) data: source ("calvin", "bridge") -> sampling weight; the MMU share is set by mmu_batch_size
    robot_mix: dict[str, float]
    # CALVIN task of a robot language window -> times each of its frames is drawn per epoch (a whole number >= 1); a
    # task not named is drawn once. Raises a task's share of the samples without dropping or duplicating data on disk
    task_repeats: dict[str, int]
    # prefix the robot (PRE/ACT) prompt with CLIP tokens + scene description before the instruction (the paper's L')
    mmu_condition: bool
    # Ray Train workers (data-parallel ranks)
    num_workers: int = _f(ge=1)
    # data parallelism over the workers: `ddp` (a full replica per rank) or `fsdp` (FSDP2: parameters, gradients
    # and AdamW moments sharded across ranks; for the 1.3B profile)
    strategy: Literal["ddp", "fsdp"]
    # CPU cores Ray reserves per worker (= its torch threads); on GPU nodes, cores for the input pipeline
    cpus_per_worker: int = _f(ge=1)
    # DataLoader processes per worker collating batches (0 = collate in the training process)
    loader_workers: int = _f(ge=0)
    # times Ray Train restarts the worker group after a worker or node failure, from the latest checkpoint
    max_failures: int = _f(ge=0)
    # save a full-state checkpoint every this many steps and at the end
    checkpoint_every: int = _f(ge=1)
    # full-state checkpoints Ray keeps in the run's storage (oldest deleted first)
    keep_checkpoints: int = _f(ge=1)
    # log the loss terms, learning rate, gradient norm and throughput to MLflow every this many steps and at the end
    log_every: int = _f(ge=1)
    # log a predicted-vs-true future-frame grid to MLflow every this many steps and at the end
    image_every: int = _f(ge=1)


    def validate(self) -> None:
        """Cross-field checks."""
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps: must be <= steps ({self.steps}), got {self.warmup_steps}")
        if not self.robot_mix:
            raise ValueError("robot_mix: name at least one robot data source")
        for source, weight in self.robot_mix.items():
            if source not in ROBOT_SOURCES:
                raise ValueError(f"robot_mix.{source}: unknown source; one of {list(ROBOT_SOURCES)}")
            if not weight > 0:
                raise ValueError(f"robot_mix.{source}: must be > 0, got {weight}")
        for task, times in self.task_repeats.items():
            if times < 1:
                raise ValueError(f"task_repeats.{task}: must be >= 1, got {times}")


@dataclass(frozen=True)
class EvaluateConfig:
    """`evaluate`: CALVIN's long-horizon protocol over parallel Ray actors."""

    # checkpoint folder evaluated by `dvc repro` (the tune stage's model); workflows.evaluate's --checkpoint / --run-id
    # override it
    checkpoint: str
    # chains of CALVIN's official list to run: the first N (CALVIN uses 1000)
    num_sequences: int = _f(ge=1, le=1000)
    # rollout actors (Ray), each owning envs_per_worker environments
    num_workers: int = _f(ge=1)
    # environments one actor steps together; its policy batches their replans into one forward
    envs_per_worker: int = _f(ge=1)
    # CPUs Ray reserves per rollout actor (and for a shared inference actor); torch threads = max(1, floor(this))
    cpus_per_worker: float = _f(gt=0.0)
    # control steps per subtask before it counts as failed (CALVIN: 360 = 12 s at 30 Hz)
    ep_len: int = _f(ge=1)
    # one policy call per control step for all of an actor's environments (false: one call per env)
    batched_inference: bool
    # where the model runs: `local` (a copy in every actor), `shared` (one inference actor batching across actors) or
    # `auto` (shared on a GPU, local on CPU)
    inference: Literal["auto", "local", "shared"]
    # inference arithmetic: `bf16` (autocast) or `fp32`
    precision: Literal["bf16", "fp32"]
    # times Ray restarts a crashed rollout actor; the chains it was running are retried
    worker_restarts: int = _f(ge=0)
    # rollout videos (camera frame beside predicted future frame) of the first N chains
    num_videos: int = _f(ge=0)


@dataclass(frozen=True)
class ClusterConfig:
    """Where Ray runs. `RAY_ADDRESS` in the environment overrides the local Ray."""

    # CPUs of the local Ray started by a stage; null = all of this machine's
    num_cpus: int | None = _f(ge=1)
    # use GPUs for training and inference when present (NCCL, CUDA)
    use_gpu: bool


@dataclass(frozen=True)
class SlurmConfig:
    """Defaults of SLURM jobs launched by `python -m cluster.slurm` (cluster/resources.py: WorkerResources)."""

    # job folders (sbatch script, stdout/stderr, pickled call and result) go to <log_dir>/<job id>/; relative to the
    # project root, which must be on a file system the compute nodes share
    log_dir: str
    # partition; null = the cluster's default partition
    partition: str | None
    # nodes per job (a Ray-on-SLURM job: the head on the first node, a worker on each other)
    nodes: int = _f(ge=1)
    # processes per node; a Ray-on-SLURM job runs one Ray node per task
    tasks_per_node: int = _f(ge=1)
    # CPU cores per task
    cpus_per_task: int = _f(ge=1)
    # GPUs per node (0 = none requested)
    gpus_per_node: int = _f(ge=0)
    # memory per node, GiB; null = the cluster's default
    mem_gb: float | None = _f(gt=0.0)
    # wall-clock limit per job, minutes
    time_min: int = _f(ge=1)


@dataclass(frozen=True)
class SweepConfig:
    """`workflows/sweep.py`: Optuna (through Ray Tune) over stage-2 loss weights and learning rate."""

    # Optuna study name; the study (every trial and its result) persists in `storage`
    study: str
    # Optuna storage file (sqlite), relative to the project root; a re-run continues the study
    storage: str
    # trials the study should have in total; a re-run runs only the missing ones
    num_trials: int = _f(ge=1)
    # trials at a time; each trains with tune.num_workers workers and evaluates with evaluate.num_workers actors
    max_concurrent: int = _f(ge=1)
    # `avg_seq_len`: CALVIN average length (maximised); `train_loss`: stage 2's last training loss (minimised, no
    # rollouts)
    objective: Literal["avg_seq_len", "train_loss"]
    # log-uniform search range [low, high] of tune.lambda_pre (the weight of L_PRE)
    lambda_pre: tuple[float, ...]
    # log-uniform search range [low, high] of tune.lambda_mmu (the weight of L_MMU)
    lambda_mmu: tuple[float, ...]
    # log-uniform search range [low, high] of tune.lr (the peak learning rate)
    lr: tuple[float, ...]
    # seed of Optuna's sampler
    seed: int = _f(ge=0)

    def validate(self) -> None:
        """Each range is [low, high] with 0 < low < high (log-uniform)."""
        for name in ("lambda_pre", "lambda_mmu", "lr"):
            bounds = getattr(self, name)
            if len(bounds) != 2 or not 0 < bounds[0] < bounds[1]:
                raise ValueError(f"{name}: expected [low, high] with 0 < low < high, got {list(bounds)}")


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow. `MLFLOW_TRACKING_URI` in the environment overrides `db`."""

    # experiment-name prefix; the experiment is f"{prefix}-{workflow}" (pipeline, ablations, sweep, robot)
    experiment_prefix: str
    # sqlite file of the tracking store, relative to the project root
    db: str
    # artifact folder, relative to the project root
    artifacts: str


@dataclass(frozen=True)
class RobotTaskConfig:
    """One real-robot task: a name (folder- and metric-safe), the instruction given to the policy, a step budget."""

    # identifier used in results, folders and MLflow metric names: lowercase letters, digits, underscores
    name: str
    # the language instruction passed to the policy
    instruction: str
    # control steps per trial (at robot.franka.control_hz)
    max_steps: int = _f(ge=1)


@dataclass(frozen=True)
class RobotConfig:
    """Real-robot evaluation: the Franka cell, the task suites, trials, and SLURM scheduling."""

    # the robot, its safety limits and cameras (envs/franka/config.py)
    franka: FrankaConfig
    # trials of every task (the paper: 20)
    trials_per_task: int = _f(ge=1)
    # trial logs, frames and summaries (one sub-folder per checkpoint), relative to the project root
    results_dir: str
    # save every trial's camera frames, actions and robot states (npz + a GIF of the static view)
    save_frames: bool
    # SLURM partition of the robot workstation (for --at scheduling)
    slurm_partition: str
    # SLURM time limit, minutes
    slurm_time_min: int = _f(ge=1)
    # SLURM CPUs for the job
    slurm_cpus_per_task: int = _f(ge=1)
    # SLURM GPUs for policy inference; 0 = CPU
    slurm_gpus: int = _f(ge=0)
    # suite name -> its tasks (the paper: seen / unseen / precise)
    suites: dict[str, tuple[RobotTaskConfig, ...]]

    def validate(self) -> None:
        """Names are identifiers (they become folders and metric keys) and unique within a suite."""
        if not self.suites:
            raise ValueError("suites: at least one suite is required")
        for suite, tasks in self.suites.items():
            if not _is_identifier(suite):
                raise ValueError(f"suites.{suite}: use lowercase letters, digits and underscores")
            if not tasks:
                raise ValueError(f"suites.{suite}: has no tasks")
            names = [task.name for task in tasks]
            for i, name in enumerate(names):
                if not _is_identifier(name):
                    raise ValueError(f"suites.{suite}[{i}].name: {name!r}: use lowercase letters, digits, underscores")
                if names.index(name) != i:
                    raise ValueError(f"suites.{suite}[{i}].name: {name!r} appears twice in the suite")


def _is_identifier(name: str) -> bool:
    return bool(name) and all(c.islower() or c.isdigit() or c == "_" for c in name)


@dataclass(frozen=True)
class ProjectConfig:
    """The whole resolved configuration: one section per stage plus shared sections."""

    # what is run: the ablation/baseline preset and the seed every stage shares
    experiment: ExperimentConfig
    # the VLA model's architecture, shared by every stage (model/config.py)
    model: ModelConfig
    # the simulator the CALVIN evaluation runs in (envs/config.py)
    env: EnvConfig
    # the `collect` stage: scripted-expert demonstrations (components/collection/collect.py) written as CALVIN /
    # BridgeData v2 / LLaVA folders
    collect: CollectConfig
    # the `ingest` stage: raw CALVIN / BridgeData v2 / LLaVA folders -> validated Parquet tables
    # (components/data/ingest.py)
    ingest: IngestConfig
    # the `tokenizer` stage: fit the VQ image tokenizer on the ingested frames (or load a pretrained one) and build the
    # text tokenizer (components/data/tokenizer.py)
    tokenizer: TokenizerConfig
    # the `pretokenize` stage: every frame -> VQ codes with Ray Data, sharded Parquet (components/data/pretokenize.py)
    pretokenize: PretokenizeConfig
    # stage 1 (`pretrain`): future prediction on Bridge-format videos + understanding (VQA) co-training
    pretrain: TrainConfig
    # stage 2 (`tune`): prediction with action on CALVIN-format demonstrations, MMU co-training, L' prompt
    tune: TrainConfig
    # the `evaluate` stage: CALVIN's long-horizon protocol over parallel Ray actors (components/evaluation/evaluate.py)
    evaluate: EvaluateConfig
    # where Ray runs: the local Ray a stage starts (`RAY_ADDRESS` in the environment joins a running cluster instead)
    cluster: ClusterConfig
    # defaults of SLURM jobs launched by `python -m cluster.slurm` (cluster/README.md); its flags override these
    slurm: SlurmConfig
    # MLflow tracking store (`MLFLOW_TRACKING_URI` in the environment overrides `db`)
    tracking: TrackingConfig
    # hyper-parameter sweep of stage 2 (workflows/sweep.py): Optuna's TPE through Ray Tune, every trial an MLflow run
    sweep: SweepConfig
    # real-robot evaluation (workflows/robot_eval.py): a Franka through franky, two RealSense cameras, operator-labelled
    # trials
    robot: RobotConfig
    # ablation/baseline presets: name -> dotted overrides of the other keys; experiment.preset picks the one applied
    presets: dict[str, dict[str, Any]]

    def validate(self) -> None:
        """Cross-section checks that single fields cannot express."""
        if self.pretrain.init_from != "backbone":
            raise ConfigError("pretrain.init_from: stage 1 starts from the backbone, got 'pretrain'")
        for name in PRESET_NAMES:
            if name not in self.presets:
                raise ConfigError(f"presets.{name}: missing (every paper ablation/baseline must be defined)")
        if self.model.vq.arch == "magvitv2" and self.tokenizer.pretrained is None:
            raise ConfigError("tokenizer.pretrained: model.vq.arch magvitv2 is Show-o's published tokenizer, which "
                              "this project loads but never fits; set it to the magvitv2 folder (README, Paper scale)")
        if self.model.proprio:
            for stage in ("pretrain", "tune"):
                train = getattr(self, stage)
                if train.lambda_act > 0 and "bridge" in train.robot_mix:
                    raise ConfigError(f"{stage}.robot_mix: names bridge while {stage}.lambda_act > 0 and model.proprio "
                                      "is on, but proprioception reads CALVIN's robot_obs (Bridge's 7-D state is "
                                      "another layout); drop bridge from the mix or set model.proprio: false")
        if self.model.prompt_layout == "reference":
            for stage in ("pretrain", "tune"):
                if getattr(self, stage).mmu_condition:
                    raise ConfigError(f"{stage}.mmu_condition: the `reference` prompt layout (model.prompt_layout) has "
                                      "no MMU-conditioned prefix; set it to false")


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | Path = PROJECT_ROOT / "params.yaml",
    *,
    profile: str | Path | None = None,
    preset: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ProjectConfig:
    """Load `params.yaml`, apply profile, preset and overrides, and validate.

    Args:
        path: the base parameter file (complete: every key present).
        profile: a profile name in `profiles/` (e.g. "paper") or a path to a profile YAML.
        preset: preset name; default is the file's `experiment.preset`.
        overrides: dotted key -> value, applied last (after the preset).

    Raises:
        ConfigError: naming the offending key path (and the file or preset it came from).
    """
    raw = read_yaml(path)
    if profile is not None:
        profile_path = Path(profile) if Path(profile).suffix else PROFILES_DIR / f"{profile}.yaml"
        raw = merge(raw, read_yaml(profile_path), source=str(profile_path))
    if overrides:
        raw = merge(raw, overrides, source="overrides")
    presets = raw.get("presets")
    if not isinstance(presets, Mapping):
        raise ConfigError(f"presets: missing or not a mapping in {path}")
    for name, preset_overrides in presets.items():  # a typo in any preset fails now, not mid-sweep
        merge(raw, preset_overrides or {}, source=f"presets.{name}")
    experiment = raw.get("experiment")
    if not isinstance(experiment, Mapping):
        raise ConfigError(f"experiment: {'missing' if experiment is None else 'expected a mapping'} in {path}")
    name = preset if preset is not None else experiment.get("preset")
    if name not in presets:
        raise ConfigError(f"experiment.preset: unknown preset {name!r}; choose one of {sorted(presets)}")
    raw = merge(raw, presets[name] or {}, source=f"presets.{name}")
    raw["experiment"]["preset"] = name
    if overrides:  # overrides win over the preset
        raw = merge(raw, overrides, source="overrides")
    return build(ProjectConfig, raw, "")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with an error naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such parameter file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: Mapping[str, Any], overlay: Mapping[str, Any], *, source: str) -> dict[str, Any]:
    """Return `base` with `overlay` merged in; overlay keys may be nested or dotted (`tune.lr`).

    Every overlay key must exist in `base`, so an overlay can only change values, never invent keys, except
    in the free-form mappings of the schema (`presets`, `<stage>.robot_mix`, `robot.suites`): there an
    overlay adds entries or replaces one entry whole (`--set tune.robot_mix.bridge=0.5` adds Bridge to the
    mix); it cannot remove one. Other mappings merge recursively.
    """
    out = copy.deepcopy(dict(base))
    for key, value in _expand_dotted(overlay, source).items():
        _merge_into(out, key, value, source, prefix="")
    return out


def _expand_dotted(overlay: Mapping[str, Any], source: str) -> dict[str, Any]:
    if not isinstance(overlay, Mapping):
        raise ConfigError(f"{source}: expected a mapping of overrides, got {type(overlay).__name__}")
    nested: dict[str, Any] = {}
    for key, value in overlay.items():
        parts = str(key).split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {key}: conflicts with another override")
        node[parts[-1]] = value
    return nested


def _merge_into(target: dict[str, Any], key: str, value: Any, source: str, prefix: str) -> None:
    path = f"{prefix}{key}"
    if prefix and _is_free_mapping(prefix[:-1]):  # an entry (a preset, a mix weight) is added or replaced whole
        target[key] = copy.deepcopy(value)
        return
    if key not in target:
        if _schema_has(path):
            raise ConfigError(f"{path}: missing in the base parameter file (so {source} cannot set it)")
        raise ConfigError(f"{path}: unknown key (from {source})")
    if isinstance(value, Mapping) and isinstance(target[key], Mapping):
        target[key] = dict(target[key])
        for sub_key, sub_value in value.items():
            _merge_into(target[key], sub_key, sub_value, source, prefix=f"{path}.")
    else:
        target[key] = copy.deepcopy(value)


def _schema_type(path: str) -> Any:
    """The type of the `ProjectConfig` field that dotted `path` names, or None when it names none.

    Walks nested config dataclasses; an Optional is unwrapped.
    """
    tp: Any = ProjectConfig
    for part in path.split("."):
        if not dataclasses.is_dataclass(tp) or part not in {f.name for f in fields(tp)}:
            return None
        tp = typing.get_type_hints(tp)[part]
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(inner) == 1:
            tp = inner[0]
    return tp


def _schema_has(path: str) -> bool:
    """Whether dotted `path` names a field of `ProjectConfig`."""
    return _schema_type(path) is not None


def _is_free_mapping(path: str) -> bool:
    """Whether dotted `path` names a `dict[...]` field, whose keys are the user's (not a config section)."""
    return typing.get_origin(_schema_type(path)) is dict


def build(cls: type, data: Any, path: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys, types and `_f` constraints recursively."""
    where = path or "<top level>"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            raise ConfigError(f"{_join(path, key)}: unknown key (expected one of {', '.join(names)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        key_path = _join(path, f.name)
        if f.name not in data:
            raise ConfigError(f"{key_path}: missing")
        value = _convert(hints[f.name], data[f.name], key_path)
        _check_range(f.metadata, value, key_path)
        kwargs[f.name] = value
    try:
        obj = cls(**kwargs)
        if hasattr(obj, "validate"):
            obj.validate()
    except ConfigError:
        raise
    except ValueError as err:  # model/ and envs/ raise "field: reason"; prefix the section path
        raise ConfigError(f"{_join(path, str(err))}") from err
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, path)
        raise ConfigError(f"{path}: unsupported union type {tp}")
    if value is None:
        raise ConfigError(f"{path}: must not be null")
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__}")
        item_tp = args[0]
        return tuple(_convert(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__}")
        return {str(k): _convert(args[1], v, _join(path, str(k))) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        return _convert_float(value, path)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported field type {tp}")


def _convert_float(value: Any, path: str) -> float:
    if isinstance(value, str):  # PyYAML (YAML 1.1) reads `3e-4` as a string; DVC's -S writes it so
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    else:
        number = float(value)
    # NaN fails every range check with a misleading message (or passes where a value has no bound) and inf
    # passes every one-sided bound; no config float means anything non-finite
    if not math.isfinite(number):
        raise ConfigError(f"{path}: must be finite, got {number}")
    return number


def _check_range(meta: Mapping[str, Any], value: Any, path: str) -> None:
    if value is None:
        return
    checks = {"ge": (lambda v, b: v >= b, ">="), "gt": (lambda v, b: v > b, ">"),
              "le": (lambda v, b: v <= b, "<="), "lt": (lambda v, b: v < b, "<")}
    for key, (ok, sign) in checks.items():
        if key in meta and not ok(value, meta[key]):
            raise ConfigError(f"{path}: must be {sign} {meta[key]}, got {value}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-ready dict of a config (tuples become lists)."""

    def plain(x: Any) -> Any:
        if isinstance(x, tuple | list):
            return [plain(v) for v in x]
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return x

    return plain(dataclasses.asdict(cfg))


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings to dotted keys (for MLflow params)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Parse `key=value` strings; values are YAML scalars (`3e-4`, `true`, `null`, `[A, B]`)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {item!r}: {key.strip()}: not a YAML value ({err.__class__.__name__})") from None
        # YAML 1.1 leaves an unquoted `3e-4` a string; a quoted value ('817612070001') stays a string
        if isinstance(parsed, str) and not value.strip().startswith(("'", '"')):
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out[key.strip()] = parsed
    return out


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """The config flags every entry point shares: --params, --profile, --preset, --set."""
    parser.add_argument("--params", default="params.yaml", help="base parameter file")
    parser.add_argument("--profile", default=None, help="profile in profiles/ (e.g. paper) or a YAML path")
    parser.add_argument("--preset", default=None, help="ablation/baseline preset (default: experiment.preset)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one value, e.g. --set tune.lr=3e-4 (repeatable)")


def config_from_args(args: argparse.Namespace) -> ProjectConfig:
    """Load the config named by `add_config_args` flags."""
    return load_config(args.params, profile=args.profile, preset=args.preset,
                       overrides=parse_overrides(args.overrides))


def main(argv: list[str] | None = None) -> int:
    """Print (or write) the resolved configuration; exit 2 with the key path on an error."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser)
    parser.add_argument("--write", default=None, help="write the resolved config here instead of printing")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if args.write:
        Path(args.write).write_text(text)
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
