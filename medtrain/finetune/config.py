"""The fine-tuning config, field by field, and the names other packages read (the grid, `medtrain results`).

Imports no torch, transformers or numpy: `medtrain grid status` and the results tables read these names
without paying for a model library.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

from medtrain.config import path_or_mapping
from medtrain.data.documents import STRIDE, ScreeningConfig, default_stride
from medtrain.data.ner_format import BratFormat, ColumnFormat, LabelConfig
from medtrain.errors import UserError

RESULTS = "results.json"
"""Written last, atomically: its presence marks a run complete."""
CHECKPOINT = "checkpoint"
"""The folder of last.pt and best-eNNN.pt, inside the run folder; deleted once the run is complete."""
SPLITS = ("train", "dev", "test")
FORMATS = {"ner": ("brat", "conll", "conllu"), "screening": ("jsonl", "csv")}
_COLUMN_KEYS = ("columns", "separator", "short_lines", "discontinuous")
_BRAT_KEYS = ("offset_mismatch", "repair_window")


@dataclasses.dataclass
class Columns:
    """Which columns of a column ("conll") file hold the token and its BIO tag; for CoNLL-U, where the tag is."""

    token: int = 0
    """Column files only: CoNLL-U's token is FORM."""
    tag: int | str = -1
    """Column files: a column index, -1 the last (MoNERo's TSV `token lemma tag POS` needs 2). CoNLL-U: misc:KEY
    (a key inside MISC: UD_Romanian-SiMoNERo's misc:BioNERLabel) or a field name such as xpos."""


@dataclasses.dataclass
class SourceConfig:
    """One language's data of one split, `{path: ..., format: conll, columns: {token: 0, tag: 2}, ...}`: the
    path and the reading keys that differ from the data section's (an omitted key takes the data section's)."""

    path: Path
    format: Literal["brat", "conll", "conllu", "jsonl", "csv"] | None = None
    columns: Columns | None = None
    separator: Literal["tab", "space"] | None = None
    short_lines: Literal["error", "skip"] | None = None
    discontinuous: Literal["split", "join"] | None = None
    offset_mismatch: Literal["repair", "skip", "error"] | None = None
    repair_window: int | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    """A source resolved against the data section: what a reader needs, and nothing left to inherit."""

    path: Path
    format: str
    columns: ColumnFormat | None
    """Column and CoNLL-U files only."""
    brat: BratFormat | None = None
    """BRAT folders only."""


@dataclasses.dataclass
class DataConfig:
    """Where each split is. A split is one path (named after the folder holding it: data/ner/es/test -> es),
    or a mapping {language: path} or {language: {path: ..., format: ..., columns: ...}}, so one run can mix
    BRAT and column files; train on a mix by listing several languages under train."""

    format: Literal["brat", "conll", "conllu", "jsonl", "csv"]
    """The default format of every path: brat (a folder of .txt/.ann), conll (a column file, or a folder of
    them) or conllu (a CoNLL-U file or folder, the tag named by columns.tag) for ner; jsonl or csv for screening."""
    train: Path | dict[str, Any]
    """A path, or {language: path or SourceConfig mapping} (read as such here, so a wrong key is named)."""
    dev: Path | dict[str, Any]
    """Selects the best epoch (dev F1 over all dev languages pooled) and, for screening, the threshold."""
    test: Path | dict[str, Any]
    """Each language is evaluated and reported separately."""
    columns: Columns = dataclasses.field(default_factory=Columns)
    """Column files: token and tag column (defaults: first and last). CoNLL-U: the tag's place (misc:KEY)."""
    separator: Literal["tab", "space"] | None = None
    """Column files: between columns one tab or one space; omitted: any whitespace."""
    document_marker: str | None = "-DOCSTART-"
    """Column files: a line starting with it starts a new document; null: one document per file."""
    short_lines: Literal["error", "skip"] = "error"
    """Column and CoNLL-U files: a line with too few columns (CoNLL-U: not 10 fields) is an error naming
    file:line, or skipped and counted."""
    discontinuous: Literal["split", "join"] = "split"
    """Column and CoNLL-U files: a bare I-X after a gap starts a new entity (split) or continues the previous X
    (join)."""
    offset_mismatch: Literal["repair", "skip", "error"] = "repair"
    """BRAT: an annotation whose text is not at its offsets in the .txt (a slip of the release) is moved to the
    nearest place within repair_window where the text is, or skipped if there is none (repair); skipped
    (skip); or an error naming file:line (error). Counted in results.json `reading`. Test gold is scored at
    the offsets as written whatever this says, as the shared tasks' own scorers score it."""
    repair_window: int = 8
    """BRAT, offset_mismatch: repair: how many characters before or after the written offsets to look."""

    def __post_init__(self) -> None:
        for split in SPLITS:
            paths = getattr(self, split)
            if isinstance(paths, Path):
                paths = {Path(paths).resolve().parent.name or split: paths}
            if not paths:
                raise ValueError(f"data.{split} needs a path or a mapping {{language: path}}")
            setattr(self, split, {str(lang): source_config(value, f"data.{split}.{lang}")
                                  for lang, value in paths.items()})
        for split in SPLITS:
            for lang in getattr(self, split):
                self.source(split, lang)  # every reading key checked now, not when the split is read

    def sources(self, split: str) -> dict[str, Source]:
        """Each language's source of a split, resolved against this section."""
        return {lang: self.source(split, lang) for lang in getattr(self, split)}

    def source(self, split: str, lang: str) -> Source:
        entry = getattr(self, split)[lang]
        if isinstance(entry, Path):
            entry = SourceConfig(entry)
        fmt = entry.format or self.format
        for keys, fits, files in ((_COLUMN_KEYS, ("conll", "conllu"), "column (conll) and CoNLL-U files"),
                                  (_BRAT_KEYS, ("brat",), "BRAT folders")):
            named = [k for k in keys if getattr(entry, k) is not None]
            if named and fmt not in fits:
                raise ValueError(f"data.{split}.{lang}: {', '.join(named)} only apply to {files}")
        try:
            if fmt == "brat":
                window = self.repair_window if entry.repair_window is None else entry.repair_window
                return Source(entry.path, fmt, None, BratFormat(entry.offset_mismatch or self.offset_mismatch, window))
            if fmt not in ("conll", "conllu"):
                return Source(entry.path, fmt, None)
            columns = entry.columns or self.columns
            reading = ColumnFormat(token=columns.token, tag=columns.tag, separator=entry.separator or self.separator,
                                   document_marker=self.document_marker,
                                   short_lines=entry.short_lines or self.short_lines,
                                   discontinuous=entry.discontinuous or self.discontinuous)
            if fmt == "conllu" and not isinstance(reading.tag, str):
                raise ValueError("format conllu needs columns.tag: misc:KEY (a key inside MISC, e.g. "
                                 "misc:BioNERLabel) or a CoNLL-U field name")
            if fmt == "conll" and not isinstance(reading.tag, int):
                raise ValueError("columns.tag of a column (conll) file is a column index; misc:KEY and field "
                                 "names are for format conllu")
        except ValueError as exc:
            raise ValueError(f"data.{split}.{lang}: {exc}") from None
        return Source(entry.path, fmt, reading)

    def formats(self) -> set[str]:
        return {self.source(split, lang).format for split in SPLITS for lang in getattr(self, split)}


def source_config(value: Any, key: str) -> Path | SourceConfig:
    """A path stays a path (so an old config resolves, and signs, as before); a mapping becomes a SourceConfig,
    its errors naming `key` (a union type would report only "expected a path or a mapping")."""
    return path_or_mapping(SourceConfig, value, key)


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 3
    lr: float = 3e-5
    batch_size: int = 16
    """Sequences per optimizer step (NER: sentence windows; screening: note windows)."""
    eval_batch_size: int = 64
    seed: int = 0
    """Fixes the head's initialisation, the data order and dropout."""
    max_length: int = 128
    """Tokens per sequence, [CLS] and [SEP] included; at most the model's max_position_embeddings."""
    warmup_ratio: float = 0.1
    """Fraction of all steps with a linear warmup from 0; then a linear decay to 0."""
    weight_decay: float = 0.01
    """AdamW decay, not applied to biases and LayerNorm weights."""
    grad_clip: float = 1.0
    """Gradient norm clip (0: none)."""
    log_every: int = 10
    """Train loss is logged every N steps (and at each epoch's end); the only steps that wait for the device."""
    group_by_length: bool = False
    """Batches of sequences of similar length (less padding: sequences are padded to the longest of their batch),
    in a shuffled batch order that depends only on (seed, epoch): each epoch's seeded permutation is cut into
    chunks of 50 batches, each chunk sorted by length and cut into batches. Off by default because it cost
    accuracy where it was measured. On the demo's NER tasks (study-demo's pretrained models, 5 seeds), grouped
    batches scored 0.05-0.15 lower entity F1, and further below the random-batch scores' spread. A batch of
    short lines (headers, mostly O) or of one template's sentences is a narrow sample of the task. Turn it on
    where padding dominates and a check shows no loss."""
    precision: Literal["fp32", "bf16"] | None = None
    """bf16: forward and loss under bfloat16 autocast, weights, gradients and AdamW state in fp32 (no loss scaling
    needed); fp32: no autocast. Unset: bf16 on GPUs that support it (Ampere and newer), else fp32; config.yaml
    records which, as pretraining's train.precision."""
    attention: Literal["sdpa", "eager"] | None = None
    """sdpa: PyTorch's scaled-dot-product attention (fused kernels, FlashAttention on GPUs); eager: the reference
    implementation, for comparison or debugging. Unset: sdpa where the model's architecture has it (BERT does),
    else eager; config.yaml records which, as pretraining's model.attention."""
    fused_optimizer: bool | None = None
    """PyTorch's fused AdamW: one kernel over all parameters instead of a loop of small ones. Unset: on where this
    PyTorch has it for the device (CUDA; CPU too since PyTorch 2.4); config.yaml records which, as pretraining's
    train.fused_optimizer."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1")
        if not self.lr > 0 or self.max_length < 8:
            raise ValueError("train.lr must be > 0 and train.max_length >= 8")
        if not 0 <= self.warmup_ratio <= 1 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("train.warmup_ratio must be in [0, 1]; weight_decay and grad_clip >= 0")


@dataclasses.dataclass
class EvalConfig:
    bootstrap: int = 1000
    """Bootstrap resamples of the test units (documents for NER, patients for screening) per interval."""
    bootstrap_seed: int = 0
    alpha: float = 0.05
    """1 - confidence level of the intervals (0.05: 95%)."""

    def __post_init__(self) -> None:
        if self.bootstrap < 1 or not 0 < self.alpha < 1:
            raise ValueError("eval.bootstrap must be >= 1 and eval.alpha in (0, 1)")


@dataclasses.dataclass
class FinetuneConfig:
    output_dir: Path
    """The run folder; running again with the same one resumes an unfinished run and skips a complete one."""
    task: Literal["ner", "screening"]
    """ner: token classification (BRAT, CoNLL columns or CoNLL-U); screening: patient classification from notes (JSONL/CSV)."""
    model: Path
    """A local Hugging Face model folder (config.json, weights, tokenizer files): a pretraining export or a
    downloaded mBERT. Its head, if any, is replaced by a new one."""
    data: DataConfig
    labels: LabelConfig | None = None
    """NER only: one label space over languages, `{map: {es: {PROTEINAS: CHEM}}, keep: [CHEM, DISO], strict: false}`,
    applied as documents are read. Training and evaluation use the mapped types; a test language sharing no type
    with the training languages is an error, one sharing some is scored on the shared types only."""
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    screening: ScreeningConfig = dataclasses.field(default_factory=ScreeningConfig)
    """Windowing, aggregation and class weights (screening only)."""
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    cache_dir: Path | None = None
    """Tokenized features; default <output_dir>/cache. Give runs one shared folder to tokenize once for all."""
    tensorboard_dir: Path | None = None
    """TensorBoard events; default <output_dir>/tensorboard. A grid sets GRID_DIR/tensorboard/<the run's name>, so
    that TensorBoard lists each run once, by name (medtrain/grid/tensorboard.py)."""
    save_model: bool = False
    """Also write the best epoch's model and tokenizer to <output_dir>/model."""
    progress: bool = True

    def __post_init__(self) -> None:
        # Filled in here, so config.yaml and a grid run's signature hold the number used. NER windows no notes;
        # STRIDE keeps its resolved config, and so its grid signature, as it was.
        if self.screening.stride is None:
            self.screening.stride = default_stride(self.train.max_length) if self.task == "screening" else STRIDE
        for fmt in sorted({self.data.format} | self.data.formats()):
            if fmt not in FORMATS[self.task]:
                raise ValueError(f"data.format {fmt} does not fit task {self.task}: "
                                 f"use {' or '.join(FORMATS[self.task])}")
        if self.labels is not None and self.task != "ner":
            raise ValueError("labels: entity label spaces are for task ner only")
        if self.task == "screening" and self.screening.stride >= self.train.max_length - 2:
            raise ValueError("screening.stride must be smaller than train.max_length - 2")


def check_inputs(cfg: FinetuneConfig, model_pending: bool = False) -> None:
    """Every path exists and the model folder looks like a Hugging Face model, before anything is written.

    model_pending: the model is the output of a job that has not run yet (a study's grid waiting on its
    pretraining jobs), so only the data paths can be checked now.
    """
    if not model_pending:
        if not cfg.model.is_dir():
            raise UserError("model folder not found (give a local Hugging Face model folder)", cfg.model)
        if not (cfg.model / "config.json").is_file():
            raise UserError("not a Hugging Face model folder (no config.json)", cfg.model)
    for split in SPLITS:
        for lang, source in cfg.data.sources(split).items():
            path, fmt = source.path, source.format
            if fmt == "brat" and not path.is_dir():
                raise UserError(f"data.{split}.{lang}: folder of .txt/.ann files not found", path)
            if fmt == "conll" and not path.exists():
                raise UserError(f"data.{split}.{lang}: column file (or folder of them) not found", path)
            if fmt == "conllu" and not path.exists():
                raise UserError(f"data.{split}.{lang}: CoNLL-U file (or folder of them) not found", path)
            if fmt in ("jsonl", "csv") and not path.is_file():
                raise UserError(f"data.{split}.{lang}: {fmt} file not found", path)
