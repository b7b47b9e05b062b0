"""The `medtrain` command: one sub-command per job, each a thin call into the module that does it.

A `UserError` anywhere below is printed as one line (`error: file:line: message`) with exit status 2;
tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from medtrain.errors import EXIT_USER_ERROR, UserError

OVERRIDES_HELP = "dotted overrides of config keys, e.g. seq_len=256 corpora.0.weight=2.0"


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from medtrain.data.sample import write_sample_data

    summary = write_sample_data(Path(args.out), seed=args.seed, scale=args.scale)
    print(summary)
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from medtrain.data import shards

    if args.verify:
        manifest = shards.verify(args.target)
        total = sum(s.sequences for s in manifest.shards)
        print(f"ok: {len(manifest.shards)} shards, {total} sequences of {manifest.seq_len} tokens, "
              f"all checksums match ({args.target})")
        return 0

    from medtrain.config import load_config
    from medtrain.data.pack import PrepareConfig, prepare

    cfg = load_config(PrepareConfig, args.target, args.overrides)
    manifest = prepare(cfg)
    total = sum(s.sequences for s in manifest.shards)
    print(f"{cfg.output_dir}: {len(manifest.shards)} shards, {total} sequences of {manifest.seq_len} tokens "
          f"(manifest.json)")
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from medtrain.config import load_config
    from medtrain.pretrain import PretrainConfig, train

    return train(load_config(PretrainConfig, args.config, args.overrides))


def _cmd_finetune(args: argparse.Namespace) -> int:
    from medtrain.config import load_config
    from medtrain.finetune import FinetuneConfig, finetune

    return finetune(load_config(FinetuneConfig, args.config, args.overrides))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medtrain",
        description="Adapt multilingual BERT to medical text on SLURM clusters: prepare packed token shards, "
                    "further-pretrain with DeepSpeed ZeRO, fine-tune and evaluate on clinical tasks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "sample-data", help="write the bundled synthetic nl/ro/es clinical data set",
        description="Write a deterministic synthetic clinical-style data set in Dutch, Romanian and Spanish: "
                    "pretraining corpora (clinical, biomedical, general), NER in BRAT and CoNLL, patient "
                    "screening records and a WordPiece tokenizer. The same seed gives the same bytes.",
    )
    p.add_argument("out", help="output folder (created)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="size multiplier: 1.0 runs in seconds (tests); 20 or more gives a benchmark corpus")
    p.set_defaults(func=_cmd_sample_data)

    p = sub.add_parser(
        "prepare", help="tokenize corpora once into packed, checksummed token shards",
        description="Tokenize the corpora named in CONFIG, pack them into fixed-length sequences with no "
                    "padding, and write shards plus manifest.json. With --verify DIR, check every shard's "
                    "size and sha256 against its manifest instead.",
    )
    p.add_argument("target", metavar="CONFIG|DIR", help="prepare config (YAML or packaged recipe name); "
                                                        "with --verify, a shard directory")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--verify", action="store_true", help="verify an existing shard directory")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser(
        "pretrain", help="further-pretrain a BERT (masked LM) with DeepSpeed ZeRO on prepared shards",
        description="Masked-LM pretraining in this process (one rank). For several ranks use "
                    "`deepspeed medtrain/pretrain.py CONFIG`, `mpirun -np N python medtrain/pretrain.py CONFIG` or "
                    "`srun python medtrain/pretrain.py CONFIG`. Running again with the same output_dir resumes.",
    )
    p.add_argument("config", help="pretraining config (YAML or packaged recipe name)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.max_steps=50 train.lr=1e-4")
    p.set_defaults(func=_cmd_pretrain)

    p = sub.add_parser(
        "finetune", help="fine-tune and evaluate one run: task x model x train/eval languages x hparams x seed",
        description="Fine-tune a local Hugging Face BERT folder for NER (BRAT/CoNLL) or patient screening "
                    "(JSONL/CSV), keep the best dev epoch and evaluate each test language; writes results.json "
                    "and predictions into output_dir. Running again resumes an unfinished run and skips a "
                    "complete one.",
    )
    p.add_argument("config", help="fine-tuning config (YAML or packaged recipe name, e.g. finetune-ner)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.lr=5e-5 data.test.ro=data/ner/ro/test")
    p.set_defaults(func=_cmd_finetune)

    return parser


def run(argv: Sequence[str] | None, parser_factory: Callable[[], argparse.ArgumentParser] = build_parser) -> int:
    """Parse and run; a UserError becomes one line on stderr and exit status 2."""
    args = parser_factory().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"error: {exc.format()}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
