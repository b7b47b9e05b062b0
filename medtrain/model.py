"""The masked-LM model: continue from a local Hugging Face BERT, or build one from a config.

`MaskedLM` runs the vocabulary projection only on the masked rows. For mBERT's 119,547-token
vocabulary that projection is most of the head's cost when run on every position; on the ~15% of
positions that are masked it becomes small (about 1.12 -> 0.65 GFLOP per token for mBERT-base).
The wrapped `BertForMaskedLM` keeps its decoder tied to the input embeddings, so `export()` writes a
model that `transformers` loads as is.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertForMaskedLM
from transformers.utils import logging as hf_logging

from medtrain.config import unknown_key_message
from medtrain.errors import UserError
from medtrain.io import replace_dir_atomic

log = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


@dataclasses.dataclass
class ModelConfig:
    """Where the model comes from. Give `init` (a local HF BERT folder) or `config` (BertConfig fields)."""

    init: Path | None = None
    """Local Hugging Face BERT directory (e.g. a downloaded bert-base-multilingual-cased) to continue from."""
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    """BertConfig fields for a model built from scratch, e.g. {hidden_size: 256, num_hidden_layers: 4}.
    vocab_size comes from the tokenizer (a larger one is kept: spare rows, or a vocabulary's cost, as the
    benchmarks model mBERT's); the rest default to BERT-base values."""
    tokenizer: Path | None = None
    """Tokenizer folder exported beside the model; defaults to `init`, else the shards' tokenizer."""
    vocabulary_extension: Path | None = None
    """The vocabulary_extension.json of an extended tokenizer (medtrain.data.vocab_extension): the model's
    embeddings grow to the new size, each new row the mean of its pieces' rows."""
    attention: Literal["sdpa", "eager"] = "sdpa"
    """sdpa: PyTorch's scaled-dot-product attention (fused kernels, FlashAttention on GPUs); eager: the
    reference implementation, for comparison or debugging."""

    def __post_init__(self) -> None:
        if (self.init is None) == (not self.config):
            raise ValueError("give exactly one of model.init (a local HF model folder) or model.config "
                             "(BertConfig fields for a new model)")
        valid = set(BertConfig().to_dict())
        for key in self.config:
            if key not in valid:
                raise ValueError(f"model.config.{key}: {unknown_key_message(key, valid, what='BertConfig field')}")


class MaskedLM(nn.Module):
    """BertForMaskedLM whose loss projects only the masked rows onto the vocabulary."""

    def __init__(self, mlm: BertForMaskedLM):
        super().__init__()
        self.mlm = mlm

    def forward(self, input_ids: torch.Tensor, masked_positions: torch.Tensor,
                masked_labels: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over masked tokens. Positions index the flattened (batch * seq_len) rows."""
        hidden = self.mlm.bert(input_ids=input_ids).last_hidden_state
        rows = hidden.reshape(-1, hidden.size(-1)).index_select(0, masked_positions)
        logits = self.mlm.cls(rows)
        return F.cross_entropy(logits.float(), masked_labels)


def build_model(cfg: ModelConfig, vocab_size: int, activation_checkpointing: bool = False) -> MaskedLM:
    """Load `cfg.init` or build from `cfg.config`, grow it by `cfg.vocabulary_extension`; the vocabulary must
    then cover the shards' token ids."""
    if cfg.init is not None:
        mlm = _load_local(cfg.init, cfg.attention)
    else:
        mlm = BertForMaskedLM(BertConfig(**{**cfg.config, "vocab_size": max(
            vocab_size, int(cfg.config.get("vocab_size", 0)))}, attn_implementation=cfg.attention))
    if cfg.vocabulary_extension is not None:
        _apply_extension(mlm, cfg.vocabulary_extension)
    if mlm.config.vocab_size < vocab_size:
        raise UserError(f"model vocabulary ({mlm.config.vocab_size}) is smaller than the shards' "
                        f"tokenizer ({vocab_size}): prepare the shards with this model's tokenizer",
                        cfg.init or cfg.vocabulary_extension)
    if activation_checkpointing:
        mlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return MaskedLM(mlm)


def _apply_extension(mlm: BertForMaskedLM, path: Path) -> None:
    """Grow a model of the extension's base size; one already extended (an earlier export) is left alone. On a
    resume the checkpoint then overwrites the new rows."""
    try:
        extension = json.loads(path.read_text(encoding="utf-8"))
        base, pieces = int(extension["base_vocab_size"]), extension["pieces"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read the vocabulary extension ({exc.__class__.__name__})", path) from None
    size = mlm.config.vocab_size
    if size == base:
        extend_embeddings(mlm, pieces)
    elif size != base + len(pieces):
        raise UserError(f"model vocabulary ({size}) is neither the extension's base ({base}) nor the extended "
                        f"size ({base + len(pieces)}): extend the tokenizer this model was trained with", path)


def extend_embeddings(mlm: BertForMaskedLM, pieces: list[list[int]]) -> None:
    """Append one embedding row per entry of `pieces`, each the mean of its pieces' rows (and the decoder bias
    the mean of their biases), so a new word starts where the model already placed its pieces, not at random.
    The decoder stays tied to the embeddings."""
    size = mlm.config.vocab_size
    if any(not ids or min(ids) < 0 or max(ids) >= size for ids in pieces):
        raise ValueError(f"every new word needs one or more piece ids in 0..{size - 1}")
    with torch.no_grad():
        rows = torch.stack([mlm.get_input_embeddings().weight[ids].mean(0) for ids in pieces])
        biases = torch.stack([mlm.cls.predictions.bias[ids].mean() for ids in pieces])
    mlm.resize_token_embeddings(size + len(pieces), mean_resizing=False)  # also sets config.vocab_size
    with torch.no_grad():
        mlm.get_input_embeddings().weight[size:] = rows
        mlm.cls.predictions.bias[size:] = biases


def load_pretrained(model_class: Any, path: Path, **kwargs: Any) -> Any:
    """`model_class.from_pretrained` on a local folder only, without transformers' "Loading weights" bars
    and its "LOAD REPORT" table (one each per load: a grid would print hundreds). The report lists weights
    that are new, which a fine-tuning head always is; callers that care ask for `output_loading_info`."""
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return model_class.from_pretrained(str(path), local_files_only=True, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)


def _load_local(path: Path, attention: str) -> BertForMaskedLM:
    if not (path / "config.json").is_file():
        raise UserError("not a Hugging Face model folder (no config.json); give a local, downloaded model", path)
    try:
        mlm, info = load_pretrained(BertForMaskedLM, path, output_loading_info=True, attn_implementation=attention)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the model ({exc.__class__.__name__}: {exc})", path) from None
    if any(key.startswith("cls.") for key in info.get("missing_keys", ())):
        log.warning("%s has no masked-LM head: it is newly initialised (decoder still tied to embeddings)", path)
    return mlm


def export(state_dict: dict[str, torch.Tensor], config: BertConfig, tokenizer_dir: Path | None, out_dir: Path) -> Path:
    """Write a Hugging Face model folder (safetensors + config + tokenizer) atomically.

    `state_dict` is the wrapped BertForMaskedLM's full fp32 state (gathered from ZeRO shards by the caller).
    """
    mlm = BertForMaskedLM(config)
    missing, unexpected = mlm.load_state_dict(state_dict, strict=False)
    missing = [k for k in missing if k not in mlm._tied_weights_keys]
    if missing or unexpected:
        raise RuntimeError(f"export state does not match the model: missing {missing}, unexpected {unexpected}")

    def write(tmp: Path) -> None:
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the run's log
        mlm.save_pretrained(str(tmp), safe_serialization=True)
        if tokenizer_dir is not None:
            for name in _TOKENIZER_FILES:
                if (tokenizer_dir / name).is_file():
                    shutil.copy2(tokenizer_dir / name, tmp / name)

    replace_dir_atomic(out_dir, write)
    return out_dir
