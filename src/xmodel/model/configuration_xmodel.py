"""`XmodelConfig`: the Hugging Face configuration of the Xmodel decoder.

The fields declared here are the single source of truth for the model section of Xmodel's project config
(`xmodel.config`): the loader reads their names, types and defaults from this class.

μP fields use the names of the MiniCPM-family configs that Xmodel-2 follows:

* ``scale_emb`` – the embedding output is multiplied by it;
* ``scale_depth`` – each attention/MLP block output is multiplied by ``scale_depth / sqrt(num_hidden_layers)``
  before the residual add (``None`` means ``sqrt(num_hidden_layers)``, i.e. no scaling);
* ``dim_model_base`` – d_base of the width ratio ``m = hidden_size / dim_model_base`` (``None`` means
  ``hidden_size``, i.e. m = 1): hidden 2-D weights are initialised with ``initializer_range / sqrt(m)``, get the
  learning rate ``lr / m``, and the final hidden state is divided by ``m`` before the LM head;
* ``initializer_range`` – init_std of Xmodel-2 Table 6.

``scale_emb=1``, ``scale_depth=None`` and ``dim_model_base=None`` give exactly a plain Llama model.
Defaults are the Xmodel-2 1.2B shape with the μP values published for MiniCPM / Xmodel-2.5 (the Xmodel-2
config itself is not public).
"""

import math

from huggingface_hub.dataclasses import strict
from transformers import PretrainedConfig


@strict
class XmodelConfig(PretrainedConfig):
    model_type = "xmodel"
    keys_to_ignore_at_inference = ["past_key_values"]

    vocab_size: int = 65280
    hidden_size: int = 1536
    intermediate_size: int = 3840
    num_hidden_layers: int = 48
    num_attention_heads: int = 24
    num_key_value_heads: int = 8
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    initializer_range: float = 0.1
    scale_emb: float = 12.0
    scale_depth: float | None = 1.4
    dim_model_base: int | None = 256
    tie_word_embeddings: bool = True
    use_cache: bool = True
    bos_token_id: int | None = 1
    eos_token_id: int | None = 2
    pad_token_id: int | None = 0

    # Fields that belong to the architecture (the model section of a project config). Derived from the
    # annotations above so that adding a field here adds it to YAML files and `--model.*` overrides.
    @classmethod
    def architecture_fields(cls) -> dict[str, tuple[type, object]]:
        """Name → (type, default) of each field this class declares (not those inherited from PretrainedConfig)."""
        annotations = XmodelConfig.__dict__["__annotations__"]
        return {name: (tp, getattr(XmodelConfig, name)) for name, tp in annotations.items()}

    # ---- derived quantities -------------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def width_mult(self) -> float:
        """m = d / d_base of μP (1.0 when dim_model_base is None)."""
        return self.hidden_size / (self.dim_model_base or self.hidden_size)

    @property
    def residual_scale(self) -> float:
        """Multiplier of each block output before the residual add: scale_depth / sqrt(num_layers)."""
        if self.scale_depth is None:
            return 1.0
        return self.scale_depth / math.sqrt(self.num_hidden_layers)

    @property
    def is_neutral_mup(self) -> bool:
        return self.scale_emb == 1 and self.residual_scale == 1 and self.width_mult == 1

    # ---- validation: called by transformers' strict dataclass checks and by xmodel.config ----------------
    def validate_architecture(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size: {self.hidden_size} is not divisible by "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_key_value_heads: {self.num_key_value_heads} does not divide "
                             f"num_attention_heads={self.num_attention_heads}")
        if self.head_dim % 2:
            raise ValueError(f"hidden_size: head_dim {self.head_dim} must be even for RoPE")
        for name in ("rope_theta", "rms_norm_eps", "initializer_range", "scale_emb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        if self.scale_depth is not None and not self.scale_depth > 0:
            raise ValueError(f"scale_depth: must be > 0 or null, got {self.scale_depth}")
        if self.dim_model_base is not None and self.dim_model_base <= 0:
            raise ValueError(f"dim_model_base: must be > 0 or null, got {self.dim_model_base}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"{name}: {value} is outside the vocabulary [0, {self.vocab_size})")


__all__ = ["XmodelConfig"]
