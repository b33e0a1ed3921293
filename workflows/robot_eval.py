"""Real-robot evaluation of a checkpoint on a Franka: run now, schedule as a SLURM job, or from cron.

    python -m workflows.robot_eval run --checkpoint artifacts/tune/model          # now, prompts on this terminal
    python -m workflows.robot_eval run --run-id <mlflow run id> --dry-run         # rehearse: the robot never moves
    python -m workflows.robot_eval schedule --at 2026-12-01T09:00 --checkpoint artifacts/tune/model
    python -m workflows.robot_eval attach results/robot/artifacts-tune-model      # answer a scheduled job's prompts
    python -m workflows.robot_eval cron --when "0 9 * * 1" --checkpoint artifacts/tune/model   # prints a crontab line

`run` connects to `robot.franka` (params.yaml), runs every unfinished trial of `robot.suites` and logs an
MLflow run `robot-<preset>-s<seed>` in the `<prefix>-robot` experiment. Results go to
`<robot.results_dir>/<checkpoint>/` (`--out` to choose): the trial log (a rerun resumes it), frames,
summary.json. `schedule` submits the same `run` as a SLURM job on `robot.slurm_partition`, starting no
earlier than `--at` (any sbatch --begin value); `cron` prints the line that runs it from a crontab. Both
run without a terminal, so their prompts go through a FIFO in the results folder: `attach` joins it.
Config flags (--params, --profile, --preset, --set) work as everywhere; --set robot.franka.hostname=... etc.
Relative checkpoint paths are taken from the project folder, where scheduled jobs and cron lines run.
"""

from __future__ import annotations

from components.core.entry import prepare_environment

prepare_environment()  # before transformers is imported: offline hubs

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

from cluster.resources import WorkerResources  # noqa: E402
from cluster.slurm import submit_command  # noqa: E402
from components.core.config import (  # noqa: E402
    PROJECT_ROOT,
    ConfigError,
    ProjectConfig,
    add_config_args,
    config_from_args,
    flatten,
    to_dict,
)
from components.core.tracking import experiment_name, resolve_target, run_name, start_run  # noqa: E402
from components.robot.operator import FifoChannel, Operator, attach_console  # noqa: E402
from components.robot.trials import RobotTrialsSummary, run_robot_trials  # noqa: E402
from envs.base import Policy  # noqa: E402
from envs.franka.env import FrankaEnv  # noqa: E402


def load_robot_policy(cfg: ProjectConfig, checkpoint: str, device: str) -> Policy:
    """The checkpoint -> policy call of robot evaluation: `load_policy`, as simulation uses.

    `checkpoint` is a folder, `runs:/<run id>/<path>` or a run id (downloaded from the MLflow store).
    """
    try:
        from components.evaluation.policy import load_policy
    except ModuleNotFoundError as err:
        if err.name != "components.evaluation.policy":
            raise
        raise RuntimeError(f"cannot load {checkpoint}: the policy loader (components.evaluation.policy.load_policy) "
                           "is not available in this checkout") from err
    return load_policy(checkpoint, target=resolve_target(cfg.tracking, PROJECT_ROOT), device=device)


def run_robot_eval(cfg: ProjectConfig, checkpoint: str, policy: Policy, out_dir: Path, *,
                   operator: Operator) -> RobotTrialsSummary:
    """Evaluate `policy` on the robot of `cfg.robot.franka` through `cfg.robot.suites`, tracked in MLflow."""
    target = resolve_target(cfg.tracking, PROJECT_ROOT)
    name = run_name("robot", cfg.experiment.preset, cfg.experiment.seed)
    params = flatten(to_dict(cfg.robot), "robot.") | {"checkpoint": checkpoint}
    tags = {"checkpoint": checkpoint, "results": str(out_dir), "dry_run": cfg.robot.franka.dry_run}
    # the robot and cameras first: a missing device fails in seconds and leaves no failed MLflow run behind
    with FrankaEnv(cfg.robot.franka, confirm=operator.confirm) as env:
        with start_run(target, experiment_name(cfg.tracking, "robot"), name, tags=tags, params=params) as run:
            return run_robot_trials(cfg.robot, env, policy, out_dir, operator=operator, checkpoint=checkpoint,
                                    log=run)


def results_folder(cfg: ProjectConfig, checkpoint: str) -> Path:
    """`<results_dir>/<checkpoint as a folder name>[-dry-run]`: one folder per checkpoint, rehearsals apart."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", checkpoint).strip("-.") or "checkpoint"
    return PROJECT_ROOT / cfg.robot.results_dir / (slug + ("-dry-run" if cfg.robot.franka.dry_run else ""))


def job_command(args: argparse.Namespace, out_dir: Path) -> list[str]:
    """The `run` command a scheduled job executes: same config and checkpoint, prompts through the FIFO."""
    command = [sys.executable, "-m", "workflows.robot_eval", "run", "--checkpoint", args.checkpoint,
               "--out", str(out_dir), "--device", args.device, "--operator-fifo",
               "--params", str(Path(args.params).resolve())]
    if args.profile:
        command += ["--profile", args.profile]
    if args.preset:
        command += ["--preset", args.preset]
    for item in args.overrides:
        command += ["--set", item]
    return command


def schedule_robot_eval(cfg: ProjectConfig, command: list[str], begin: str):
    """Submit `command` as a SLURM job on the robot partition, starting no earlier than `begin`; the submitit job."""
    robot = cfg.robot
    resources = WorkerResources(cpus_per_task=robot.slurm_cpus_per_task, gpus_per_node=robot.slurm_gpus,
                                time_min=robot.slurm_time_min, partition=robot.slurm_partition)
    return submit_command(command, resources=resources, log_dir=PROJECT_ROOT / cfg.slurm.log_dir,
                          name="upvla-robot-eval", begin=begin)


def cron_line(when: str, command: list[str], out_dir: Path) -> str:
    """A crontab line running `command` from the project folder at `when` (five cron fields), logging to out_dir."""
    if len(when.split()) != 5:
        raise ValueError(f"--when {when!r}: expected five cron fields, e.g. '0 9 * * 1' (Mondays 09:00)")
    log = shlex.quote(str(out_dir / "cron.log"))
    return f"{when} cd {shlex.quote(str(PROJECT_ROOT))} && {shlex.join(command)} >> {log} 2>&1"


def build_parser() -> argparse.ArgumentParser:
    """`run`, `schedule`, `cron` (with the config flags and a checkpoint) and `attach`."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "schedule", "cron"):
        sub = commands.add_parser(name)
        add_config_args(sub)
        source = sub.add_mutually_exclusive_group(required=True)
        source.add_argument("--checkpoint", help="checkpoint folder, or runs:/<run id>/<path>")
        source.add_argument("--run-id", dest="checkpoint", help="MLflow run whose artifacts hold one checkpoint")
        sub.add_argument("--out", default=None, help="results folder (default: <robot.results_dir>/<checkpoint>)")
        sub.add_argument("--dry-run", action="store_true", help="never move the robot (robot.franka.dry_run)")
        sub.add_argument("--device", default="cpu", help="torch device of the policy, e.g. cuda")
    commands.choices["run"].add_argument("--operator-fifo", action="store_true",
                                         help="prompts through <out>/operator.in (a job without a terminal)")
    commands.choices["schedule"].add_argument("--at", required=True, help="start time: any sbatch --begin value")
    commands.choices["cron"].add_argument("--when", required=True, help="five cron fields, e.g. '0 9 * * 1'")
    commands.add_parser("attach").add_argument("folder", help="the results folder of a running job")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Dispatch the subcommand; exit 2 with a message on bad input, a missing checkpoint or no robot."""
    args = build_parser().parse_args(argv)
    if args.command == "attach":
        attach_console(Path(args.folder))
        return 0
    if args.dry_run:
        args.overrides.append("robot.franka.dry_run=true")
    try:
        cfg = config_from_args(args)
        out_dir = Path(args.out).resolve() if args.out else results_folder(cfg, args.checkpoint)
        if args.command == "schedule":
            job = schedule_robot_eval(cfg, job_command(args, out_dir), args.at)
            print(f"SLURM job {job.job_id} on partition {cfg.robot.slurm_partition}, not before {args.at}.\n"
                  f"Join it with: python -m workflows.robot_eval attach {out_dir}")
        elif args.command == "cron":
            line = cron_line(args.when, job_command(args, out_dir), out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)  # the line's log redirection needs the folder
            print(line)
        else:
            summary = evaluate_now(cfg, args, out_dir)
            print(json.dumps(dataclasses.asdict(summary), indent=2))
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError, OSError) as err:  # checkpoint, SLURM, robot and camera errors
        print(f"robot_eval: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # FrankaEnv has already stopped the robot on its way out
        print("robot_eval: interrupted; the robot was stopped. Run the same command to resume.", file=sys.stderr)
        return 130
    return 0


def evaluate_now(cfg: ProjectConfig, args: argparse.Namespace, out_dir: Path) -> RobotTrialsSummary:
    """`run`: load the policy first (a bad checkpoint fails before the robot is touched), then run the trials."""
    policy = load_robot_policy(cfg, args.checkpoint, args.device)
    channel = FifoChannel(out_dir) if args.operator_fifo else None
    try:
        operator = channel.operator() if channel else Operator()
        return run_robot_eval(cfg, args.checkpoint, policy, out_dir, operator=operator)
    finally:
        if channel:
            channel.close()


if __name__ == "__main__":
    raise SystemExit(main())
