"""The only module that imports DeepSpeed: process group, config assembly, `deepspeed.initialize`,
ZeRO gathering for export, the conversion of a checkpoint for another world size (DeepSpeed's universal
checkpoint), and DeepSpeed's memory estimates (for the benchmarks).

Behind these few functions the rest of medtrain takes plain values, and a DeepSpeed upgrade touches one
file. A `ds_configs/*.json` file chooses the ZeRO stage and offload. Batch sizes, accumulation, learning
rate, schedule, clipping and precision come from medtrain's config and are filled in here, so one JSON
works for any run. A JSON that sets one of those values differently is a contradiction, caught
before training with a message naming both values.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch

from medtrain.dist import DistInfo, export_torch_env
from medtrain.errors import UserError

Precision = Literal["fp32", "bf16", "fp16"]
Schedule = Literal["linear", "cosine", "constant"]


@dataclasses.dataclass(frozen=True)
class EngineSpec:
    """Plain training values the engine needs (taken from the run's config by the entry point)."""

    ds_config: Path
    micro_batch_size: int
    grad_accum: int
    lr: float
    warmup_steps: int
    max_steps: int
    schedule: Schedule = "linear"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    grad_clip: float = 1.0
    precision: Precision = "fp32"
    load_universal: bool = False
    """Resume from a checkpoint converted by `to_universal` (a different world size wrote the original)."""
    fused_optimizer: bool = True
    """PyTorch's fused AdamW (one kernel over all parameters, on CUDA and CPU alike, nothing compiled at start-up)
    instead of its per-parameter loop. Not with an offloaded optimizer: DeepSpeed's CPU Adam steps that one."""


def lr_factor(step: int, warmup_steps: int, max_steps: int, schedule: Schedule, min_lr_ratio: float) -> float:
    """Linear warmup to 1, then linear or cosine decay to `min_lr_ratio` at `max_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * decay


def load_ds_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError("DeepSpeed config not found (see ds_configs/ for the shipped ones)", path) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"invalid JSON: {exc.msg}", path, exc.lineno) from None
    if not isinstance(data, dict):
        raise UserError("a DeepSpeed config must be a JSON object", path)
    return data


def _offloads(zero: dict[str, Any], what: str) -> bool:
    return str(zero.get(what, {}).get("device", "none")) not in ("none", "None")


Offload = Literal["none", "optimizer", "all"]


def zero_layout(ds_json: dict[str, Any]) -> tuple[int, Offload]:
    """The ZeRO stage and what a DeepSpeed JSON (as `load_ds_json` read it) offloads to the CPU (none, optimizer, or
    all: parameters too)."""
    zero = ds_json.get("zero_optimization", {"stage": 0})
    offload: Offload = "none"
    if _offloads(zero, "offload_optimizer"):
        offload = "all" if _offloads(zero, "offload_param") else "optimizer"
    return int(zero.get("stage", 0)), offload


def build_ds_config(spec: EngineSpec, world_size: int) -> dict[str, Any]:
    """The DeepSpeed config for this run: the JSON's ZeRO settings plus medtrain's values."""
    base = load_ds_json(spec.ds_config)
    ds = copy.deepcopy(base)
    train_batch = spec.micro_batch_size * spec.grad_accum * world_size
    wanted: dict[str, tuple[Any, str]] = {
        "train_micro_batch_size_per_gpu": (spec.micro_batch_size, "data.micro_batch_size"),
        "gradient_accumulation_steps": (spec.grad_accum, "train.grad_accum"),
        "train_batch_size": (train_batch, f"data.micro_batch_size x train.grad_accum x world size ({world_size})"),
        "gradient_clipping": (spec.grad_clip, "train.grad_clip"),
    }
    for key, (value, source) in wanted.items():
        if key in base and base[key] not in ("auto", value):
            raise UserError(f"{key} is {base[key]} here but medtrain's config gives {value} ({source}); "
                            f"remove {key} from the JSON or set it to \"auto\"", spec.ds_config)
        ds[key] = value
    for name in ("bf16", "fp16"):
        enabled = bool(base.get(name, {}).get("enabled", False))
        if enabled and spec.precision != name:
            raise UserError(f"{name} is enabled here but train.precision is {spec.precision}; "
                            f"set train.precision={name} or disable {name} in the JSON", spec.ds_config)
        ds[name] = {**base.get(name, {}), "enabled": spec.precision == name}
    for key in ("optimizer", "scheduler"):
        if key in base:
            raise UserError(f"remove the \"{key}\" section: medtrain sets the optimizer and schedule from "
                            "train.lr, train.warmup_steps and train.schedule", spec.ds_config)
    zero = ds.setdefault("zero_optimization", {"stage": 0})
    if zero.get("stage", 0) not in (0, 1, 2, 3):
        raise UserError(f"zero_optimization.stage must be 0-3, got {zero.get('stage')!r}", spec.ds_config)
    if _offloads(zero, "offload_optimizer"):
        # Offloaded optimizer states need DeepSpeed's own CPU Adam, built from this section.
        ds["optimizer"] = {"type": "AdamW", "params": {"lr": spec.lr, "betas": list(spec.betas), "eps": spec.eps,
                                                       "weight_decay": spec.weight_decay}}
    if spec.load_universal:
        ds["checkpoint"] = {**ds.get("checkpoint", {}), "load_universal": True}
    ds.setdefault("steps_per_print", 10**9)  # medtrain's monitor logs; keep DeepSpeed quiet
    ds.setdefault("wall_clock_breakdown", False)
    return ds


def init_process_group(info: DistInfo, backend: str | None = None, timeout_s: float = 1800) -> Any:
    """Join the process group: "nccl" with CUDA, else "gloo"; each rank on its own GPU when there are GPUs.
    A collective that waits longer than `timeout_s` raises on the ranks that wait, so a lost peer ends the job.
    Returns a group for small CPU collectives: None (the world group) on gloo, a gloo group beside NCCL, which
    reduces CUDA tensors only.

    One path for every launcher: export the env ourselves (dist.discover() already found rank 0, MPI
    included), then DeepSpeed initialises torch.distributed with env:// and no MPI discovery of its own.
    """
    import deepspeed

    if torch.cuda.is_available():
        torch.cuda.set_device(_cuda_device(info.local_rank, torch.cuda.device_count()))
    _skip_shm_all_reduce_op(deepspeed)
    timeout = datetime.timedelta(seconds=timeout_s)
    _default_group_timeout(timeout)
    export_torch_env(info)
    # The world group's timeout too: DeepSpeed's default was read from torch's module when it was imported.
    deepspeed.init_distributed(dist_backend=backend or ("nccl" if torch.cuda.is_available() else "gloo"),
                               auto_mpi_discovery=False, verbose=False, timeout=timeout)
    if torch.distributed.get_backend() == "gloo":
        return None
    return torch.distributed.new_group(backend="gloo", timeout=timeout)


def default_precision(ds_json: dict[str, Any]) -> Precision:
    """The 16-bit mode the DeepSpeed JSON enables; else bf16 on GPUs that support it (Ampere and newer); else fp32."""
    for name in ("bf16", "fp16"):
        if ds_json.get(name, {}).get("enabled", False):
            return name
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


def _default_group_timeout(timeout: datetime.timedelta) -> None:
    """The timeout of every process group made from here on. DeepSpeed's ZeRO optimizers reduce over groups of
    their own (torch.distributed.new_group), which take torch's module default (30 min on gloo, 10 on NCCL), not
    the world group's timeout; a hung peer would hold the other ranks that long."""
    from torch.distributed import distributed_c10d

    distributed_c10d.default_pg_timeout = timeout
    if hasattr(distributed_c10d, "default_pg_nccl_timeout"):
        distributed_c10d.default_pg_nccl_timeout = timeout


def _skip_shm_all_reduce_op(deepspeed: Any) -> None:
    """DeepSpeed's CPU backend JIT-compiles a shared-memory all-reduce op at init (about a minute of C++ on a
    fresh node, a compiler required) and maps a ~50 MB /dev/shm buffer per rank that it never unlinks. Only
    its inference all-reduce (tensor-parallel layers) uses the op; training reduces through torch.distributed.
    Marking the op incompatible makes DeepSpeed skip it."""
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


def _cuda_device(local_rank: int, device_count: int) -> int:
    """One visible GPU (e.g. srun --gpus-per-task=1) is every rank's device 0; else the local rank's."""
    if device_count == 1:
        return 0
    if local_rank >= device_count:
        raise UserError(f"LOCAL_RANK={local_rank} but only {device_count} GPUs are visible: start fewer ranks per node")
    return local_rank


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No weight decay on biases and LayerNorm weights, as in BERT's recipe."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def initialize(model: torch.nn.Module, spec: EngineSpec, world_size: int) -> Any:
    """Wrap `model` in a DeepSpeed engine with AdamW and the warmup/decay schedule; returns the engine."""
    import deepspeed

    ds_config = build_ds_config(spec, world_size)

    def schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(
            step, spec.warmup_steps, spec.max_steps, spec.schedule, spec.min_lr_ratio))

    def optimizer(groups: Any) -> torch.optim.Optimizer:
        return torch.optim.AdamW(groups, lr=spec.lr, betas=spec.betas, eps=spec.eps,
                                 fused=spec.fused_optimizer or None)

    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=_param_groups(model, spec.weight_decay),
        optimizer=None if "optimizer" in ds_config else optimizer,
        lr_scheduler=schedule, config=ds_config, dist_init_required=False)
    if world_size == 1 and engine.zero_optimization_stage() == 0 and spec.precision != "bf16":
        # Nothing to reduce, but DeepSpeed would still flatten every gradient into buckets and copy them back each
        # step (3% of a small model's step on CPU, more with a large vocabulary). bf16 at ZeRO-0 keeps the path:
        # its optimizer accumulates fp32 gradients around that reduction.
        engine.enable_backward_allreduce = False
    return engine


def partitioned_by_world(checkpoint_folder: Path) -> bool:
    """Whether a checkpoint's optimizer state is cut per data-parallel rank (ZeRO 1-3, or bf16 at ZeRO 0), so that
    another world size needs `to_universal`; fp32 ZeRO 0 keeps one whole optimizer state any world size loads."""
    return any(Path(checkpoint_folder).glob("*optim_states.pt"))


def to_universal(checkpoint_folder: Path, output_folder: Path) -> None:
    """Convert a DeepSpeed checkpoint into the universal layout (one file per parameter and optimizer moment), which
    an engine built with `EngineSpec.load_universal` loads on any world size. One pass over the model states: time
    and memory linear in the model size. Serial (no worker pool): it runs inside a rank while the others wait."""
    import argparse

    from deepspeed.checkpoint import ds_to_universal

    args = argparse.Namespace(input_folder=str(checkpoint_folder), output_folder=str(output_folder),
                              num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)
    # it prints its progress (and tqdm bars); a rank's output is the run's log
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ds_to_universal.main(args)


def gather_full_state(engine: Any) -> dict[str, torch.Tensor] | None:
    """Collective: the full model state as fp32 CPU tensors on rank 0 (None elsewhere), ZeRO-3 included."""
    import deepspeed

    module = engine.module
    state = None
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        if engine.global_rank == 0:
            state = {k: v.detach().to("cpu", torch.float32).clone() for k, v in module.state_dict().items()}
    return state


def model_states_estimate(model: torch.nn.Module, stage: int, offload: Offload, procs: int,
                          nodes: int) -> dict[str, Any]:
    """DeepSpeed's analytic model-states memory for this layout, in bytes ("device" per GPU, "host" per node).

    DeepSpeed's `estimate_zero{2,3}_model_states_mem_needs` (behind the `..._all_live` printers) assume mixed
    precision; stage 2's serves stage 1 too (it undercounts the gradients, which stage 1 does not partition)
    and there is none for stage 0 (function None).
    """
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    def numel(params: Iterable[torch.nn.Parameter]) -> int:
        """Full sizes, also once ZeRO-3 has partitioned them (`ds_numel`); tied weights once."""
        return sum({id(p): getattr(p, "ds_numel", p.numel()) for p in params}.values())

    # what DeepSpeed's model_to_params counts, which reads 0 for a model already wrapped by ZeRO-3
    total_params = numel(model.parameters())
    largest_layer = max(numel(m.parameters(recurse=False)) for m in model.modules())
    out: dict[str, Any] = {"total_params": total_params, "largest_layer_params": largest_layer, "function": None}
    if stage in (1, 2):
        host, device = estimate_zero2_model_states_mem_needs(total_params, procs, nodes,
                                                              cpu_offload=offload != "none")
        out.update(function="estimate_zero2_model_states_mem_needs", device=device, host=host)
    elif stage == 3:
        host, device, _ = estimate_zero3_model_states_mem_needs(
            total_params, largest_layer, procs, nodes, cpu_offload=offload != "none",
            cpu_offload_params=offload == "all", zero_init=False)
        out.update(function="estimate_zero3_model_states_mem_needs", device=device, host=host)
    return out
