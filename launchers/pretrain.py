"""Submit one pretraining run as one multi-node SLURM job (submitit), from a login node.

    python launchers/pretrain.py CONFIG [k=v ...] --nodes 2 --gpus-per-node 4 --partition gpu --time 1440

A thin front end over medtrain.cluster.pretrain_job.submit_pretrain; `--help` explains every option.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from medtrain.cli import run
from medtrain.cluster.resources import PRETRAIN, SlurmResources
from medtrain.errors import UserError

DESCRIPTION = """\
Submit one masked-LM pretraining run (medtrain/pretrain.py) as ONE SLURM job spanning --nodes nodes:
one rank per GPU (--gpus-per-node), or --tasks-per-node CPU ranks when --gpus-per-node is 0. Every rank
runs under srun and finds its place through medtrain.dist; the config is checked here before submitting.

Before the time limit (or on preemption) SLURM sends SIGUSR2 (--signal-delay seconds early): every rank
saves a checkpoint at the next step boundary, then the job requeues itself and resumes from output_dir.
scancel stops it for good; submitting the same command again resumes from the last checkpoint."""

EPILOG = """\
examples:
  python launchers/pretrain.py pretrain.yaml output_dir=/shared/runs/mbert-med \\
      --nodes 2 --gpus-per-node 4 --cpus-per-task 8 --partition gpu --time 1440
  python launchers/pretrain.py demo-pretrain data.shards=demo/study/shards \\
      --gpus-per-node 0 --tasks-per-node 2 --partition debug --time 30 --slurm exclude=node07

Compute nodes need no internet: the model, tokenizer and shards come from paths in the config, which must
be on storage that every node sees (so must the log folder). See slurm/README.md."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="launchers/pretrain.py", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="pretraining config (YAML or packaged recipe name)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.lr=1e-4")
    res = parser.add_argument_group("resources")
    res.add_argument("--nodes", type=int, default=1, metavar="N", help="nodes for the one job (default %(default)s)")
    res.add_argument("--gpus-per-node", type=int, default=0, metavar="G",
                     help="GPUs per node, one rank each; 0: CPU ranks")
    res.add_argument("--tasks-per-node", type=int, metavar="T",
                     help="CPU ranks per node when --gpus-per-node is 0 (default 1)")
    res.add_argument("--cpus-per-task", type=int, metavar="C",
                     help="CPU cores per rank (data workers + 1 is a good start)")
    res.add_argument("--mem-gb", type=float, metavar="GB", help="memory per node in GB")
    res.add_argument("--time", type=int, default=60, metavar="MIN", help="time limit in minutes (default %(default)s)")
    slurm = parser.add_argument_group("SLURM")
    slurm.add_argument("--partition", help="partition (default: the cluster's default)")
    slurm.add_argument("--account", help="account to charge")
    slurm.add_argument("--qos", help="quality of service")
    slurm.add_argument("--constraint", help="node features, e.g. a100")
    slurm.add_argument("--slurm", action="append", default=[], metavar="NAME[=VALUE]",
                       help="any other submitit SLURM parameter (an sbatch option with underscores), repeatable: "
                            "--slurm exclude=node07 --slurm exclusive; a misspelt name lists the valid ones")
    slurm.add_argument("--signal-delay", type=int, default=PRETRAIN["signal_delay_s"], metavar="S",
                       help="seconds before the time limit that SIGUSR2 asks for a checkpoint (default %(default)s)")
    slurm.add_argument("--max-timeouts", type=int, default=PRETRAIN["max_timeouts"], metavar="K",
                       help="requeues after reaching the time limit before giving up (default %(default)s)")
    slurm.add_argument("--folder", type=Path, metavar="DIR",
                       help="submitit's pickles and logs, on shared storage (default OUTPUT_DIR/slurm)")
    parser.set_defaults(func=submit)
    return parser


def parse_slurm_options(items: list[str]) -> dict[str, str | bool]:
    """`name=value` -> {"name": "value"}; a bare `name` is an sbatch flag without a value (True)."""
    options: dict[str, str | bool] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not name:
            raise UserError(f"--slurm {item!r} must look like name=value or name")
        options[name.replace("-", "_")] = value if sep else True
    return options


def resources(args: argparse.Namespace) -> SlurmResources:
    """The flags as the one resources dataclass that every SLURM job of medtrain takes."""
    try:
        return SlurmResources(
            nodes=args.nodes, tasks_per_node=args.tasks_per_node, gpus_per_node=args.gpus_per_node,
            partition=args.partition, time_min=args.time, cpus_per_task=args.cpus_per_task, mem_gb=args.mem_gb,
            account=args.account, qos=args.qos, constraint=args.constraint, signal_delay_s=args.signal_delay,
            max_timeouts=args.max_timeouts, extra=parse_slurm_options(args.slurm))
    except ValueError as exc:
        raise UserError(f"resources: {exc}") from None


def submit(args: argparse.Namespace) -> int:
    from medtrain.cluster.pretrain_job import submit_pretrain

    submission = submit_pretrain(args.config, args.overrides, resources(args), folder=args.folder)
    print(f"submitted job {submission.job_id}: {submission.ranks} ranks on {args.nodes} node(s)")
    print(f"run folder:  {submission.output_dir}")
    print(f"logs:        {submission.log_folder}/{submission.job_id}_0_log.out (and .err; one pair per rank)")
    print(f"tensorboard: tensorboard --logdir {submission.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:], build_parser))
