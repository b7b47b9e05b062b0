"""Model FLOPs of one BERT masked-LM training step, and the peak rates MFU is measured against.

The count is of matrix multiplies only (a multiply-add is 2 FLOPs); biases, LayerNorm, GELU, softmax, dropout
and the embedding lookups are left out, as in the usual MFU accounting (PaLM appendix B, Megatron-LM). For a BERT
with L layers, hidden size h, FFN size f, sequence length s and vocabulary V, per token and per layer, forward:

    Q, K, V and output projections     2 * 4 * h * h
    FFN up and down                    2 * 2 * h * f
    attention scores Q K^T             2 * s * h      (each token against s keys, all heads together)
    attention-weighted values A V      2 * s * h
    -> encoder, per token:             L * (8 h^2 + 4 h f + 4 s h)     ( = 2 * N_nonembedding + 4 L s h, about)

and per row the MLM head sends to the vocabulary (its transform dense h x h, then the decoder h x V):

    head, per projected row:           2 h^2 + 2 h V

medtrain's MaskedLM projects only the masked rows (about 15% of tokens); the Hugging Face BertForMaskedLM
projects every row, padding included. Training = forward + backward = 3 x forward (the backward pass computes
gradients of both the inputs and the weights, 2 x forward). Activation checkpointing recomputes the encoder's
forward in backward: that is hardware work, not model work, so MFU leaves it out and HFU (`hardware_flops`)
counts it. BertForMaskedLM has no pooler, so none is counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# Dense bf16 tensor-core peaks, FLOP/s, no sparsity (vendor data sheets). MFU is taken against these whatever
# the run's precision, and the peak used is recorded with each result.
PEAK_BF16: dict[str, float] = {
    "H100 SXM": 989.4e12,
    "H100 NVL": 835.5e12,
    "H100 PCIe": 756.5e12,
    "H200": 989.4e12,  # same compute as H100 SXM; more and faster memory
    "GH200": 989.4e12,
    "A100": 312.0e12,  # SXM and PCIe
    "A10G": 70.0e12,
    "L4": 121.0e12,
    "L40S": 362.0e12,
}


@dataclasses.dataclass(frozen=True)
class BertShape:
    layers: int
    hidden: int
    intermediate: int
    vocab: int

    @classmethod
    def from_config(cls, config: dict[str, Any], vocab: int) -> BertShape:
        """From BertConfig fields (BERT-base defaults for the ones not given)."""
        hidden = int(config.get("hidden_size", 768))
        return cls(layers=int(config.get("num_hidden_layers", 12)), hidden=hidden,
                   intermediate=int(config.get("intermediate_size", 4 * hidden)), vocab=vocab)


def encoder_forward_per_token(shape: BertShape, seq_len: int) -> int:
    h, f = shape.hidden, shape.intermediate
    return shape.layers * (8 * h * h + 4 * h * f + 4 * seq_len * h)


def head_forward_per_row(shape: BertShape) -> int:
    return 2 * shape.hidden * shape.hidden + 2 * shape.hidden * shape.vocab


def train_step_flops(shape: BertShape, sequences: int, seq_len: int, head_rows: int,
                     activation_checkpointing: bool = False) -> dict[str, int]:
    """Model FLOPs (for MFU) and hardware FLOPs (for HFU) of one optimizer step's forward + backward.

    `head_rows` are the rows the head projects: the masked tokens for medtrain, every token for the HF baseline.
    """
    encoder = sequences * seq_len * encoder_forward_per_token(shape, seq_len)
    head = head_rows * head_forward_per_row(shape)
    model = 3 * (encoder + head)
    hardware = model + (encoder if activation_checkpointing else 0)
    return {"model_flops": model, "hardware_flops": hardware}


FORMULA = ("model_flops = 3 * (tokens * L * (8 h^2 + 4 h f + 4 s h) + head_rows * (2 h^2 + 2 h V)); "
           "head_rows = masked tokens (medtrain) or all tokens (HF); hardware_flops adds one encoder forward "
           "with activation checkpointing")


def peak_for(device_name: str) -> tuple[str, float] | None:
    """The PEAK_BF16 entry matching a CUDA device name (e.g. 'NVIDIA H100 80GB HBM3'), or None."""
    name = device_name.upper()
    if "GH200" in name:
        return "GH200", PEAK_BF16["GH200"]
    if "H200" in name:
        return "H200", PEAK_BF16["H200"]
    if "H100" in name:
        if "NVL" in name:
            return "H100 NVL", PEAK_BF16["H100 NVL"]
        if "PCIE" in name:
            return "H100 PCIe", PEAK_BF16["H100 PCIe"]
        return "H100 SXM", PEAK_BF16["H100 SXM"]  # "H100 80GB HBM3" is the SXM part
    for key in ("A100", "A10G", "L40S", "L4"):
        if key in name:
            return key, PEAK_BF16[key]
    return None
