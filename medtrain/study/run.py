"""`medtrain study CONFIG`: every stage that is not complete yet, in order, then the report.

    medtrain study study-demo data_dir=demo/data output_dir=demo/study

With executor: slurm the pretraining jobs and the fine-tuning array are submitted and the command returns;
run the same command again once the jobs have ended for the analysis and the report (`medtrain grid status
OUTPUT_DIR/grid.yaml` shows where the runs stand).
"""

from __future__ import annotations

import time
from pathlib import Path

from medtrain.errors import UserError
from medtrain.study.config import StudyConfig
from medtrain.study.plan import Say, Study
from medtrain.study.report import stage_report
from medtrain.study.stages import stage_analyze, stage_finetune, stage_pretrain, stage_prepare


def run_study(cfg: StudyConfig, say: Say = print, source: Path | None = None) -> int:
    """Run every stage that is not complete yet; print the results table, the report's path and how to watch.
    `source`: the config file, named by the errors that resolving the plan and preparing its data find in it
    (an unknown corpus, a vocabulary.add the corpora cannot fill), before anything is submitted."""
    started = time.perf_counter()
    try:
        study = Study(cfg)
        stage_prepare(study, say)
    except UserError as exc:
        if exc.path is None and source is not None:
            raise UserError(exc.message, source) from None
        raise
    waiting, resubmitted = stage_pretrain(study, say)
    if not stage_finetune(study, waiting, resubmitted, say):
        say(f"watch it with: tensorboard --logdir {study.out}")
        return 0
    stage_analyze(study, say)
    table = stage_report(study, say)
    say("")
    say(table)
    say(f"report: {study.report}  ({time.perf_counter() - started:.0f}s)")
    say(f"watch it with: tensorboard --logdir {study.out}")
    return 0
