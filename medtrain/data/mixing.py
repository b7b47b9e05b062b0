"""How much of the training stream each corpus gets: the sampling modes of the corpus mix.

Every mode reads a corpus's weight (from the manifest, or `data.weights`) and its size (train sequences);
a corpus with weight 0 gets probability exactly 0 in every mode.

* **uniform**: p_c proportional to weight_c. Equal weights give equal shares whatever the sizes, so a small
  corpus is up-sampled (repeated) to match a large one. The default, and medtrain's behaviour before modes.
* **proportional**: p_c proportional to weight_c * size_c. Weights are up/down-sampling factors: 1.0 is the
  natural share (every sequence once per stream epoch), 2.0 twice as often, 0.5 half as often.
* **temperature**: the multilingual recipe (XLM-R, mBERT). With s_c = weight_c * size_c and S_L the sum of s_c
  over the corpora of language L, language L gets probability proportional to S_L ** (1/T), and the corpora of
  a language share it in proportion to s_c. T = 1 is proportional; a large T tends to equal shares per language
  (a small language is up-sampled); T < 1 sharpens towards the largest language.

Numpy only: configs and reports import it without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

Sampling = Literal["uniform", "proportional", "temperature"]


def mixture_weights(sizes: Sequence[int] | np.ndarray, languages: Sequence[str],
                    weights: Sequence[float] | np.ndarray, sampling: Sampling = "uniform",
                    temperature: float = 1.0) -> np.ndarray:
    """Unnormalised mixture masses per corpus (see the module docstring); `mixture_probabilities` normalises.

    The uniform masses are the weights themselves, so the stream's integer counts per epoch, apportioned from
    them, are exactly those of runs made before sampling modes existed (their checkpoints still resume).
    """
    if sampling not in get_args(Sampling):
        raise ValueError(f"sampling must be one of {list(get_args(Sampling))}, got {sampling!r}")
    if not temperature > 0:
        raise ValueError(f"the sampling temperature must be > 0, got {temperature}")
    w, n = np.asarray(weights, dtype=np.float64), np.asarray(sizes, dtype=np.float64)
    if not len(w) == len(n) == len(languages):
        raise ValueError(f"{len(n)} sizes, {len(languages)} languages and {len(w)} weights: one each per corpus")
    if sampling == "uniform":
        masses = w.copy()
    elif sampling == "proportional":
        masses = w * n
    else:
        masses = _temperature(w * n, languages, temperature)
    if not masses.sum() > 0:
        raise ValueError("no corpus has both a positive weight and train sequences")
    return masses


def _temperature(scaled: np.ndarray, languages: Sequence[str], temperature: float) -> np.ndarray:
    """Language shares proportional to S_L ** (1/T), computed in log space (no overflow at small T), split
    within each language in proportion to the corpora's scaled sizes."""
    names, language = np.unique(np.asarray(languages, dtype=str), return_inverse=True)
    totals = np.bincount(language, weights=scaled, minlength=len(names))
    with np.errstate(divide="ignore"):
        logits = np.log(totals) / temperature  # -inf for a language with nothing to draw: share exactly 0
    if not np.isfinite(logits).any():
        return np.zeros_like(scaled)
    shares = np.exp(logits - logits.max())
    safe = np.where(totals > 0, totals, 1.0)
    return shares[language] * scaled / safe[language]


def mixture_probabilities(sizes: Sequence[int] | np.ndarray, languages: Sequence[str],
                          weights: Sequence[float] | np.ndarray, sampling: Sampling = "uniform",
                          temperature: float = 1.0) -> np.ndarray:
    """One probability per corpus, summing to 1, exactly 0 where the weight is 0. ValueError for an unknown
    mode, a temperature <= 0, or a mix in which no corpus has both a weight and sequences."""
    masses = mixture_weights(sizes, languages, weights, sampling, temperature)
    return masses / masses.sum()
