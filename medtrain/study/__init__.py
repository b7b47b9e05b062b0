"""The study this toolkit exists for, from raw corpora to report.md in one command (`medtrain study CONFIG`).

Imports go one way: run -> stages (-> analysis) and report (-> compare) -> plan -> config (no torch).
    config.py     the study config's dataclasses
    plan.py       Study: the config resolved into paths and each stage's own config, before anything runs
    stages.py     prepare, pretrain (local subprocesses or SLURM jobs), the fine-tuning grid, analysis
    analysis.py   `medtrain analyze`: fertility, corpus-task overlap, perplexity (why one model beats another)
    compare.py    per-unit test scores and the paired multi-bootstrap difference from the baseline
    report.py     report.md, report.json and differences.png
    run.py        run_study: the stages in order, then the report
"""
