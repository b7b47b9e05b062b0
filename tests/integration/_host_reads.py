"""Run `medtrain/pretrain.py`'s main in this process while recording every read of a tensor back to the host
(`item`, `tolist`, `float()`, `int()`, `bool()`) made from medtrain/pretrain.py, by function and device; writes
them to the JSON file named first, before the run's exit.

    python tests/integration/_host_reads.py READS.json CONFIG [k=v ...]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import torch

from medtrain import pretrain

READS = ("item", "tolist", "__float__", "__int__", "__bool__")


def spy_on_reads(counts: Counter[str]) -> None:
    for name in READS:
        original = getattr(torch.Tensor, name)

        def read(self: torch.Tensor, *args: object, _name: str = name, _original=original, **kwargs: object):
            caller = sys._getframe(1).f_code
            if caller.co_filename == pretrain.__file__:
                counts[f"{caller.co_name} {_name} {self.device.type}"] += 1
            return _original(self, *args, **kwargs)

        setattr(torch.Tensor, name, read)


if __name__ == "__main__":
    out, argv = Path(sys.argv[1]), sys.argv[2:]
    counts: Counter[str] = Counter()
    spy_on_reads(counts)
    try:
        pretrain.main(argv)
    finally:
        out.write_text(json.dumps(counts), encoding="utf-8")
