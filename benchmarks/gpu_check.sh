#!/usr/bin/env bash
# The GPU check: on a bare machine with one H100 / H200, CUDA, and a python3 that has PyTorch and transformers
# but no network, prove medtrain's GPU path in a few minutes and leave every figure in one folder.
#
#   make gpu-wheels                              # where there is network: gpu-wheels/ (< 60 MiB) to carry along
#   bash benchmarks/gpu_check.sh [OUT]           # on the GPU machine (default OUT: gpu-check-out)
#   bash benchmarks/gpu_check.sh --cpu [OUT]     # every step on CPU with a small model (the test suite runs it)
#
# Steps, each with its own time limit, each logged to OUT/logs/STEP.log, stopping at the first that fails:
#   install   the wheels in gpu-wheels/ (GPU_WHEELS=DIR for another folder) into OUT/site, --no-deps, no index;
#             skipped when there is no such folder and python3 already imports everything
#   check     the packages import and (GPU mode) torch sees a CUDA device; else one line saying what is missing
#   versions  OUT/versions.json: GPU, driver, CUDA, python and library versions
#   data      the bundled sample corpora (medtrain sample-data) and their shards (medtrain prepare)
#   bench     benchmarks/run.py on matrices/gpu-check.yaml (--cpu: gpu-check-cpu.yaml): tokens/s, MFU against the
#             GPU's dense bf16 peak, peak memory against DeepSpeed's estimate, the HF Trainer beside medtrain;
#             each row is a fresh process, its start-up and warm-up steps outside the measured steps
#   profile   the ZeRO-0 seq_len-512 row again under torch.profiler: OUT/results/profiled/ (operator table, trace)
#   pretrain  `medtrain pretrain`, 30 steps, ZeRO-2, precision unset (so bf16 on the GPU, fp32 with --cpu),
#             exported as a Hugging Face folder
#   finetune  `medtrain finetune`, NER, 1 epoch, on that export
#   finetune-bench  benchmarks/finetune_bench.py on matrices/finetune-gpu-check.yaml (--cpu:
#             finetune-gpu-check-cpu.yaml): NER and screening fine-tuning, medtrain against the HF Trainer, bert-base
#             x mBERT vocabulary at max_length 128 and 256; tokens/s, seconds per epoch, peak memory, test F1 of
#             both: OUT/finetune-bench/ (rows.json, table.md, the JSON lines)
#   report    OUT/report/report.md and PNGs (benchmarks/report.py) and OUT/summary.md (steps, seconds, versions)
# PYTHON=... picks the interpreter (default python3). Exit 0 only when every step passed.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
MODE=gpu
if [ "${1:-}" = "--cpu" ]; then MODE=cpu; shift; fi
case "${1:-}" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;; esac
OUT="$(mkdir -p "${1:-gpu-check-out}" && cd "${1:-gpu-check-out}" && pwd)"
PYTHON="${PYTHON:-python3}"
WHEELS="${GPU_WHEELS:-$REPO/gpu-wheels}"
STARTED=$SECONDS
mkdir -p "$OUT/logs"
: >"$OUT/steps.tsv"

die() { echo "gpu_check: $*" >&2; exit 1; }

# step NAME LIMIT_S COMMAND...: run with a time limit, log to OUT/logs/NAME.log, record the seconds it took.
step() {
  local name="$1" limit="$2" start=$SECONDS rc=0
  shift 2
  echo "gpu_check: $name (limit ${limit}s) ..."
  timeout --kill-after=10 "$limit" "$@" >"$OUT/logs/$name.log" 2>&1 || rc=$?
  printf '%s\t%s\t%s\n' "$name" "$((SECONDS - start))" "$rc" >>"$OUT/steps.tsv"
  if [ "$rc" != 0 ]; then
    tail -n 25 "$OUT/logs/$name.log" >&2
    [ "$rc" = 124 ] && die "step $name ran past its ${limit}s limit (log: $OUT/logs/$name.log)"
    die "step $name failed with exit $rc (log: $OUT/logs/$name.log)"
  fi
}

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  step install 120 "$PYTHON" -m pip install --no-index --no-deps --no-compile --target "$OUT/site" "$WHEELS"/*.whl
  export PYTHONPATH="$OUT/site${PYTHONPATH:+:$PYTHONPATH}"
  export PATH="$OUT/site/bin:$PATH"
else
  echo "gpu_check: no wheels in $WHEELS: using what $PYTHON imports"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # benchmarks/ import medtrain from the checkout as well
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
[ "$MODE" = cpu ] && export CUDA_VISIBLE_DEVICES="" DS_ACCELERATOR=cpu

step check 120 "$PYTHON" - "$MODE" <<'EOF'
import importlib, sys
mode = sys.argv[1]
missing = []
for name in ("torch", "transformers", "deepspeed", "submitit", "seqeval", "sklearn", "yaml", "tensorboard",
             "datasets", "accelerate", "matplotlib", "medtrain"):
    try:
        importlib.import_module(name)
    except Exception as exc:  # an import that fails for any reason is missing for the check
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
if missing:
    sys.exit("cannot import " + "; ".join(missing) + ": run `make gpu-wheels` where there is network and carry "
             "gpu-wheels/ (or set GPU_WHEELS)")
import torch
if mode == "gpu" and not torch.cuda.is_available():
    sys.exit("no CUDA device visible to torch (torch.cuda.is_available() is False); --cpu runs the check on CPU")
print("ok:", torch.cuda.get_device_name(0) if mode == "gpu" else "cpu")
EOF

step versions 60 "$PYTHON" - "$OUT/versions.json" <<'EOF'
import json, platform, subprocess, sys
from importlib.metadata import version  # DeepSpeed's too, unimported: medtrain/engine.py is its one importer
import torch, transformers
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformers": transformers.__version__, "deepspeed": version("deepspeed"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
try:
    info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,memory.total", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=30).stdout.strip() or None
except (OSError, subprocess.TimeoutExpired):
    info["driver"] = None
with open(sys.argv[1], "w") as f:
    json.dump(info, f, indent=2)
print(json.dumps(info))
EOF

step data 180 bash -c '
  "$1" -m medtrain.cli sample-data "$2/data" --scale 1 &&
  "$1" -m medtrain.cli prepare "$2/data/prepare.yaml" output_dir="$2/shards" seq_len=128' _ "$PYTHON" "$OUT"

if [ "$MODE" = gpu ]; then
  MATRIX=gpu-check MODEL='{hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072}'
  MICRO=32 BENCH_LIMIT=330 PROFILED='medtrain base/mbert s512 mb16 zero0' FT_LIMIT=420
else
  MATRIX=gpu-check-cpu MODEL='{hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 128}'
  MICRO=4 BENCH_LIMIT=240 PROFILED='medtrain mini/sample s512 mb1 zero0' FT_LIMIT=240
fi
step bench "$BENCH_LIMIT" "$PYTHON" "$REPO/benchmarks/run.py" "$REPO/benchmarks/matrices/$MATRIX.yaml" \
  --out "$OUT/results"
# where the seq_len-512 step spends its time: operator table and trace in OUT/results/profiled/
step profile 120 "$PYTHON" "$REPO/benchmarks/run.py" "$REPO/benchmarks/matrices/$MATRIX.yaml" \
  --only "$PROFILED" --profile --out "$OUT/results"

cat >"$OUT/pretrain.yaml" <<EOF
output_dir: $OUT/pretrain
data: {shards: $OUT/shards, micro_batch_size: $MICRO, num_workers: 2}
model: {config: $MODEL}
deepspeed: $REPO/ds_configs/zero2.json
train: {max_steps: 30, lr: 1.0e-4, warmup_steps: 3, save_every: 30, eval_every: 30, eval_batches: 2,
        log_every: 5}
progress: false
EOF
step pretrain 150 "$PYTHON" -m medtrain.cli pretrain "$OUT/pretrain.yaml"

NER="$OUT/data/ner/es"
cat >"$OUT/finetune.yaml" <<EOF
output_dir: $OUT/finetune
task: ner
model: $OUT/pretrain/export
data: {format: brat, train: $NER/train, dev: $NER/dev, test: {es: $NER/test}}
train: {epochs: 1, lr: 5.0e-5, batch_size: 16, max_length: 128}
eval: {bootstrap: 100}
EOF
step finetune 150 "$PYTHON" -m medtrain.cli finetune "$OUT/finetune.yaml"

# fine-tuning against the Trainer, each run a fresh process, on the sample data the data step wrote
step finetune-bench "$FT_LIMIT" "$PYTHON" "$REPO/benchmarks/finetune_bench.py" \
  "$REPO/benchmarks/matrices/finetune-$MATRIX.yaml" --data "$OUT/data" --out "$OUT/finetune-bench" \
  --json "$OUT/finetune-bench/rows.json" --markdown "$OUT/finetune-bench/table.md"

step report 60 "$PYTHON" "$REPO/benchmarks/report.py" "$OUT"/results/*.jsonl --out "$OUT/report" \
  --note "benchmarks/gpu_check.sh ($MODE mode)"

{
  echo "# GPU check ($MODE mode), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo '```'
  cat "$OUT/versions.json"
  echo
  echo '```'
  echo
  echo "| step | seconds | exit |"
  echo "|---|---|---|"
  awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$OUT/steps.tsv"
  echo
  echo "Total: $((SECONDS - STARTED)) s. Benchmark report: report/report.md; pretraining: pretrain/ (history.jsonl,"
  echo "tensorboard/, export/); fine-tuning: finetune/results.json; fine-tuning against the Trainer:"
  echo "finetune-bench/ (rows.json, table.md)."
  echo
  echo "## Fine-tuning: medtrain against the Hugging Face Trainer"
  echo
  cat "$OUT/finetune-bench/table.md"
} >"$OUT/summary.md"
echo "gpu_check: every step passed in $((SECONDS - STARTED)) s; summary in $OUT/summary.md"
