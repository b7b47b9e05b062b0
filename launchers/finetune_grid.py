"""Submit a fine-tuning grid as one SLURM job array (submitit), from a login node; idempotent.

    python launchers/finetune_grid.py GRID [k=v ...]        # the same as: medtrain grid submit GRID [k=v ...]

Runs already complete, pending or running are skipped, so running it again after failures launches only the
missing runs. Then: `medtrain grid status GRID`, `medtrain grid cancel GRID`, `medtrain results GRID_DIR`.
The spec's keys are documented in medtrain/grid/spec.py; medtrain/configs/grid-demo.yaml is an example.
"""

from __future__ import annotations

import sys

from medtrain.cli import run

if __name__ == "__main__":
    sys.exit(run(["grid", "submit", *sys.argv[1:]]))
