"""Integration worker, started by a launcher (not collected by pytest): find our rank through medtrain.dist,
join a gloo group through medtrain.engine, all-reduce a rank-dependent tensor and write what this rank saw to OUT_DIR/rank<N>.json.

    <launcher> python tests/integration/_allreduce.py OUT_DIR

Options (the deepspeed launcher puts --local_rank=N before OUT_DIR) are ignored: medtrain.dist reads the env.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from medtrain import dist as medtrain_dist
from medtrain.engine import init_process_group
from medtrain.io import write_json_atomic


def main(out_dir: Path) -> None:
    info = medtrain_dist.discover()
    # gloo whatever the machine: these tests are about launchers, not devices.
    init_process_group(info, backend="gloo")
    # Summed over ranks: [1 + 2 + ..., 1 + 10 + 100 + ...]; a lost or doubled rank changes the digits.
    value = torch.tensor([info.rank + 1.0, 10.0**info.rank], dtype=torch.float64)
    dist.all_reduce(value)
    result = {
        **asdict(info),
        "sum": value.tolist(),
        "group_rank": dist.get_rank(),
        "group_size": dist.get_world_size(),
        "backend": dist.get_backend(),
    }
    write_json_atomic(out_dir / f"rank{info.rank}.json", result)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(next(arg for arg in sys.argv[1:] if not arg.startswith("--"))))
