"""Mixture weights → shares: the one rule that turns configured weights into a distribution.

Weights are relative: a share is a weight over the sum of the positive ones, and an entry of weight 0 is left
out (a source prepared but not sampled). The stage mixtures of the data config, the tokenizer's training
sample, the mixture sampler and the wind tunnel's decay branches all go through here.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import ConfigError


def normalise_weights(weights: Mapping[str, float], what: str) -> dict[str, float]:
    """Shares summing to 1 over the entries of positive weight; `what` names the weights in the error.

    Raises ConfigError (an XmodelError and a ValueError) when no weight is positive.
    """
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        raise ConfigError(f"{what}: no weight is positive")
    return {name: w / total for name, w in weights.items() if w > 0}


def decay_shares(sft_share: float, pretrain: Mapping[str, float], categories: Mapping[str, float],
                 what: str = "decay") -> dict[str, float]:
    """Shares of a decay-stage mixture: 1 − sft_share over the `pretrain` entries by weight, sft_share over the SFT
    `categories` by weight (as packed sources ``sft.<category>``)."""
    out: dict[str, float] = {}
    if sft_share < 1:
        out.update({name: (1 - sft_share) * w
                    for name, w in normalise_weights(pretrain, f"{what} pretraining weights").items()})
    if sft_share > 0:
        for category, w in normalise_weights(categories, f"{what}.categories").items():
            name = f"sft.{category}"
            out[name] = out.get(name, 0.0) + sft_share * w
    return {name: w for name, w in out.items() if w > 0}
