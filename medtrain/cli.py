"""The `medtrain` command: one sub-command per job, each a thin call into the module that does it.

A `UserError` anywhere below is printed as one line (`error: file:line: message`) with exit status 2;
tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from medtrain.errors import run_reporting_errors

if TYPE_CHECKING:  # imported where used: it pulls in torch
    from medtrain.grid.spec import Grid

OVERRIDES_HELP = "dotted overrides of config keys, e.g. seq_len=256 corpora.0.weight=2.0"


def _cmd_sample_data(args: argparse.Namespace) -> int:
    from medtrain.data.sample import write_sample_data

    summary = write_sample_data(Path(args.out), seed=args.seed, scale=args.scale, contaminate=not args.clean)
    print(summary)
    return 0


def _cmd_split(args: argparse.Namespace) -> int:
    from medtrain.data.split import parse_ratios, split_corpus

    result = split_corpus(args.source, args.out, parse_ratios(args.ratios), seed=args.seed, by=args.by,
                          fmt=args.format, force=args.force, order=args.order)
    print("\n".join(result.summary()))
    return 0


def _cmd_overlap(args: argparse.Namespace) -> int:
    from medtrain.config import load_config, resolve_config_path
    from medtrain.data.pack import PrepareConfig, measure_overlap
    from medtrain.io import write_json_atomic

    source = resolve_config_path(args.config)
    cfg = load_config(PrepareConfig, args.config, args.overrides)
    exclusion = measure_overlap(cfg, source)
    names = [s["name"] for s in exclusion["sources"]]
    print("\nshare of each evaluation source's n-grams found in each raw corpus:")
    width = max(len(c) for c in exclusion["raw_coverage"])
    print(" " * width + "  " + "  ".join(names))
    for corpus, shares in exclusion["raw_coverage"].items():
        print(corpus.ljust(width) + "  " + "  ".join(f"{shares[n]:.1%}".rjust(len(n)) for n in names))
    if args.json:
        write_json_atomic(args.json, exclusion)
        print(f"wrote {args.json}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from medtrain.data import shards

    if args.verify:
        manifest = shards.verify(args.target)
        total = sum(s.sequences for s in manifest.shards)
        print(f"ok: {len(manifest.shards)} shards, {total} sequences of {manifest.seq_len} tokens, "
              f"{len(manifest.files)} other files, all checksums match ({args.target})")
        return 0

    from medtrain.config import load_config, resolve_config_path
    from medtrain.data.pack import PrepareConfig, prepare

    cfg = load_config(PrepareConfig, args.target, args.overrides)
    manifest = prepare(cfg, resolve_config_path(args.target))
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
    from medtrain.finetune import FinetuneConfig
    from medtrain.finetune.run import finetune

    return finetune(load_config(FinetuneConfig, args.config, args.overrides))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from medtrain.data.ner.evaluate import evaluate, format_report, load_labels, parse_types
    from medtrain.errors import UserError
    from medtrain.io import write_json_atomic

    if args.json is not None and Path(args.json).is_dir():
        raise UserError("--json names a folder; give a file name, e.g. scores.json", args.json)
    report = evaluate(args.gold, args.pred, args.format, args.pred_format, args.token, args.tag, args.discontinuous,
                      load_labels(args.labels) if args.labels else None, args.language, parse_types(args.types),
                      args.bootstrap, args.bootstrap_seed, args.alpha)
    print(format_report(report))
    if args.json is not None:
        write_json_atomic(args.json, report)
        print(f"wrote {args.json}")
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from medtrain.config import load_config
    from medtrain.study.analysis import AnalyzeConfig, analyze

    cfg = load_config(AnalyzeConfig, args.config, args.overrides)
    analyze(cfg)
    print(f"wrote {cfg.output_dir / 'analysis.md'}, analysis.json and plots")
    return 0


def _load_grid(args: argparse.Namespace) -> Grid:
    from medtrain.grid.spec import load_grid

    return load_grid(args.grid, args.overrides)


def _cmd_grid_submit(args: argparse.Namespace) -> int:
    from medtrain.grid.status import FAILED, format_status, grid_status
    from medtrain.grid.submit import submit_grid

    grid = _load_grid(args)
    submit_grid(grid)
    if grid.spec.executor == "local":
        statuses = grid_status(grid)
        print(format_status(statuses))
        return 1 if any(s.state == FAILED for s in statuses) else 0  # the table above says which and why
    return 0


def _cmd_grid_status(args: argparse.Namespace) -> int:
    from medtrain.grid.status import format_status, grid_status

    print(format_status(grid_status(_load_grid(args))))
    return 0


def _cmd_grid_cancel(args: argparse.Namespace) -> int:
    from medtrain.grid.submit import cancel_grid

    cancelled = cancel_grid(_load_grid(args))
    print(f"cancelled {len(cancelled)} jobs: {' '.join(cancelled)}" if cancelled else "no pending or running jobs")
    return 0


def _print_results(folder: Path) -> int:
    from medtrain.grid.results import write_results

    written = write_results(folder)
    print(written.markdown)
    print(f"{written.runs} finished runs; wrote {', '.join(str(p) for p in written.files)}")
    print(f"compare runs: tensorboard --logdir {folder} (HParams tab)")
    return 0


def _cmd_grid_results(args: argparse.Namespace) -> int:
    from medtrain.grid.tensorboard import link_runs

    grid = _load_grid(args)
    link_runs(grid)
    return _print_results(grid.grid_dir)


def _cmd_results(args: argparse.Namespace) -> int:
    return _print_results(Path(args.folder))


def _cmd_study(args: argparse.Namespace) -> int:
    from medtrain.config import load_config, resolve_config_path
    from medtrain.study.config import StudyConfig
    from medtrain.study.run import run_study

    return run_study(load_config(StudyConfig, args.config, args.overrides), source=resolve_config_path(args.config))


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
    p.add_argument("--clean", action="store_true",
                   help="plant no test documents or test patients' notes in the clinical corpora and write no "
                        "contamination.json (default: plant a few of each kind, for prepare's exclude: section)")
    p.set_defaults(func=_cmd_sample_data)

    p = sub.add_parser(
        "split", help="split a corpus that has no train/dev/test into three, reproducibly",
        description="Shuffle the documents (or sentences) of SOURCE with a seeded generator and cut them by "
                    "ratio into OUT/train, OUT/dev and OUT/test in SOURCE's own format, each unit's lines copied "
                    "byte for byte, plus OUT/split.json (source sha256, seed, ratios, counts, the ids in each "
                    "split). The same inputs give the same bytes. Example: medtrain split monero.tsv data/ner/ro "
                    "--ratios 0.8,0.1,0.1 --seed 0 --by sentence",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="a column (CoNLL) file, a BRAT folder of .txt/.ann, or a JSONL file of screening records")
    p.add_argument("out", metavar="OUT", help="output folder, created whole or not at all, e.g. data/ner/ro")
    p.add_argument("--ratios", default="0.8,0.1,0.1", metavar="TRAIN,DEV,TEST",
                   help="three non-negative fractions summing to 1 (default 0.8,0.1,0.1), e.g. 0.7,0.15,0.15")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0), e.g. --seed 13")
    p.add_argument("--by", choices=["document", "sentence"], default="document",
                   help="unit kept whole in one split (default document: -DOCSTART- documents, BRAT files, "
                        "JSONL patients); sentence: column files only, e.g. one MoNERo file with no -DOCSTART-")
    p.add_argument("--format", choices=["conll", "conllu", "brat", "jsonl"], default=None,
                   help="source format (default: a folder is brat, *.jsonl jsonl, *.conllu conllu, any other file "
                        "conll), e.g. --format conll for a .txt column file, --format conllu for a CoNLL-U file "
                        "named otherwise")
    p.add_argument("--order", choices=["shuffle", "source"], default="shuffle",
                   help="shuffle (default): units drawn at random with --seed; source: cut in source order, train "
                        "first, so the sentences of one document stay in one split (no neighbouring sentences, and "
                        "the names in them, shared by train and test), e.g. --by sentence --order source")
    p.add_argument("--force", action="store_true", help="replace OUT if it exists and is not empty")
    p.set_defaults(func=_cmd_split)

    p = sub.add_parser(
        "prepare", help="tokenize corpora once into packed, checksummed token shards",
        description="Tokenize the corpora named in CONFIG, pack them into fixed-length sequences with no "
                    "padding, and write shards plus manifest.json. With an exclude section, documents that hold "
                    "most of an evaluation document's word n-grams (or name one of its patients) are dropped, "
                    "and manifest.json says what went. With --verify DIR, check every shard's size and sha256, "
                    "and every other file prepare wrote (the tokenizer copy, config.yaml), against its manifest "
                    "instead.",
    )
    p.add_argument("target", metavar="CONFIG|DIR", help="prepare config (YAML or packaged recipe name); "
                                                        "with --verify, a shard directory")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--verify", action="store_true", help="verify an existing shard directory")
    p.set_defaults(func=_cmd_prepare)

    p = sub.add_parser(
        "overlap", help="how much evaluation text the corpora of a prepare config hold, writing no shards",
        description="Apply the exclude section of a prepare CONFIG to its corpora without writing shards: per "
                    "corpus, the documents and tokens prepare would drop and for which evaluation source, and the "
                    "share of each evaluation source's word n-grams that each raw corpus holds (what would leak).",
    )
    p.add_argument("config", metavar="CONFIG", help="prepare config with an exclude section")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the measurement (manifest.json's "
                                                            "exclusion entry) to OUT")
    p.set_defaults(func=_cmd_overlap)

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

    p = sub.add_parser(
        "evaluate", help="score predicted NER files against gold with fine-tuning's exact-offset scorer",
        description="Score PRED against GOLD as fine-tuning scores a test language (strict exact-offset entity "
                    "precision, recall and F1, micro, with bootstrap intervals over documents, or sentences when "
                    "GOLD is one document; per-type scores; the recall ceiling of a flat tagger), so another "
                    "system, or an older run, is compared on medtrain's terms. On a run's predictions/<lang>/ "
                    "folder, with --types set to its results.json test[lang].scored_types and its eval settings, "
                    "the numbers equal its results.json test[lang]. GOLD BRAT offsets are scored as written. "
                    "Example: medtrain evaluate data/ner/es/test runs/es/predictions/es --labels runs/es/config.yaml "
                    "--language es --types CHEM,DISO",
    )
    p.add_argument("gold", metavar="GOLD", help="gold: a BRAT folder (.txt + .ann), a column (CoNLL) file or folder "
                                                "of them, or a CoNLL-U file or folder")
    p.add_argument("pred", metavar="PRED",
                   help="predictions: a folder of <doc_id>.ann files (what fine-tuning writes to predictions/<lang>/; "
                        "a .txt beside each is not needed), or a file or folder in GOLD's format with predicted tags. "
                        "Document ids are GOLD's: BRAT file names, <stem>-NNNN or <stem> for column and CoNLL-U "
                        "files (a single PRED file stands for a single GOLD file whatever its name). A gold document "
                        "without a prediction counts as predicting nothing")
    p.add_argument("--format", choices=["brat", "conll", "conllu"], default=None,
                   help="GOLD's format (default: a folder is brat, a .conllu file conllu, any other file conll)")
    p.add_argument("--pred-format", choices=["brat", "conll", "conllu"], default=None,
                   help="PRED's format: brat (.ann files) or GOLD's own (default: brat when PRED is a folder, else "
                        "GOLD's format)")
    p.add_argument("--token", type=int, default=None, metavar="N",
                   help="column files: the token's column index (default 0)")
    p.add_argument("--tag", default=None, metavar="N|misc:KEY|FIELD",
                   help="column files: the IOB2 tag's column index (default -1, the last; MoNERo's TSV needs 2); "
                        "CoNLL-U (required): misc:KEY, a key inside MISC such as misc:BioNERLabel, or a field "
                        "name such as xpos")
    p.add_argument("--discontinuous", choices=["join", "split"], default=None,
                   help="column and CoNLL-U files: a bare I-X after a gap continues the sentence's previous X "
                        "entity as a further fragment (join, MoNERo) or starts a new one (split, the default)")
    p.add_argument("--labels", metavar="FILE", default=None,
                   help="a YAML file with a labels: section (map, keep, strict), e.g. the run's fine-tuning "
                        "config: gold and predictions are read into that label space, as the run read them")
    p.add_argument("--language", metavar="LANG", default=None,
                   help="which language's labels.map applies to GOLD and PRED alike, e.g. es")
    p.add_argument("--types", metavar="A,B", default=None,
                   help="score only these types (after the label map), as a run scores only the types its "
                        "training had (results.json test[lang].scored_types); default: every type of GOLD or PRED")
    p.add_argument("--bootstrap", type=int, default=None, metavar="N",
                   help="resamples per interval (default 1000, fine-tuning's eval.bootstrap)")
    p.add_argument("--bootstrap-seed", type=int, default=None, metavar="SEED",
                   help="the resampling seed (default 0, fine-tuning's eval.bootstrap_seed)")
    p.add_argument("--alpha", type=float, default=None, metavar="A",
                   help="1 - the intervals' confidence level (default 0.05: 95%%, fine-tuning's eval.alpha)")
    p.add_argument("--json", metavar="OUT", default=None,
                   help="also write the report (the table's numbers and more) as JSON to OUT, atomically")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "analyze", help="measure tokenizer fertility, corpus-task overlap and model perplexity on task text",
        description="Explain differences between models: subwords per word and [UNK] rate per corpus and task, "
                    "vocabulary and n-gram coverage of each task's text by each pretraining corpus, and each "
                    "model's masked-LM perplexity on each task's text; writes analysis.md, analysis.json, PNGs.",
    )
    p.add_argument("config", help="analysis config (YAML)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=OVERRIDES_HELP)
    p.set_defaults(func=_cmd_analyze)

    p = sub.add_parser(
        "grid", help="a grid of fine-tuning runs as one SLURM job array: submit, status, results, cancel",
        description="Expand a grid spec (a base fine-tuning config crossed with axes and combinations, see "
                    "medtrain/grid/spec.py and the packaged grid-demo) into runs named by a hash of their config. "
                    "submit launches the runs that are neither complete nor queued, as one SLURM array (or on "
                    "this machine with executor: local); status shows each run's state; cancel stops the jobs.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, func, text in [
        ("submit", _cmd_grid_submit, "launch the missing runs (idempotent: complete and queued runs are skipped)"),
        ("status", _cmd_grid_status, "one line per run: completed, running, pending, requeued, failed (why)"),
        ("results", _cmd_grid_results, "the results table, plots and TensorBoard hparams of the grid's runs"),
        ("cancel", _cmd_grid_cancel, "scancel the grid's pending and running jobs"),
    ]:
        a = actions.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}.")
        a.add_argument("grid", metavar="GRID", help="grid spec (YAML or packaged name, e.g. grid-demo)")
        a.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="grid keys (grid_dir=runs/g executor=local) or base config keys (base.train.epochs=1)")
        a.set_defaults(func=func)

    p = sub.add_parser(
        "results", help="one table (markdown, CSV), plots and TensorBoard hparams from finished runs",
        description="Gather every results.json under GRID_DIR (or one run folder) into a table of test scores, "
                    "mean ± std over seeds per model, task and training -> evaluation language, showing only the "
                    "parameters that differ; writes results.md, results.csv, plots/ and tensorboard/ there.",
    )
    p.add_argument("folder", metavar="GRID_DIR|RUN_DIR", help="a grid folder, any folder of runs, or one run folder")
    p.set_defaults(func=_cmd_results)

    p = sub.add_parser(
        "study", help="the whole study: pretraining variants, fine-tuning grid, analysis and report.md",
        description="Pretrain each variant (and the baseline, when it is pretrained here), fine-tune every model "
                    "on every task, training language and seed, analyze the data and write OUTPUT_DIR/report.md: "
                    "the results table, the winner per task, each variant's difference from the baseline with a "
                    "confidence interval and the cross-lingual matrix. Locally, or as SLURM jobs (pretraining "
                    "first, the fine-tuning array after it). Running it again continues where it stopped.",
    )
    p.add_argument("config", help="study config (YAML or packaged recipe name, e.g. study-demo)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. data_dir=demo/data output_dir=demo/study")
    p.set_defaults(func=_cmd_study)

    return parser


def run(argv: Sequence[str] | None, parser_factory: Callable[[], argparse.ArgumentParser] = build_parser) -> int:
    """Parse and run; a UserError becomes one line on stderr and exit status 2."""
    args = parser_factory().parse_args(argv)
    return run_reporting_errors(lambda: args.func(args))


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(run(argv))


if __name__ == "__main__":
    main()
