"""The Xmodel decoder: a Llama-style transformer with the five μP operations of Xmodel-2 (Table 6).

Readable in one sitting, in the layout of transformers' `modeling_llama.py` (same weight names, so Llama
checkpoints and tools line up), with the μP multipliers of MiniCPM's released modeling code:

1. embedding output × ``scale_emb``                               (`XmodelModel.forward`)
2. each block output × ``scale_depth / sqrt(L)`` before the residual add (`XmodelDecoderLayer.forward`)
3. hidden 2-D weights initialised with ``init_std / sqrt(m)``        (`XmodelPreTrainedModel._init_weights`)
4. hidden 2-D weights trained at ``lr / m``                           (`xmodel.model.mup.mup_param_groups`)
5. final hidden state ÷ m before the LM head                        (`XmodelForCausalLM.forward`)

with m = hidden_size / dim_model_base. Attention, with the usual 1/sqrt(head_dim) scale, goes through transformers'
attention registry as Llama's does: ``attn_implementation`` "sdpa" (the default), "eager", "flex_attention",
"flash_attention_2" or any registered name selects it (`from_pretrained(..., attn_implementation=...)`,
`set_attn_implementation`). On CPU, "sdpa" runs as `cpu_attention`'s "xmodel_cpu": the same SDPA kernel, with
grouped K/V heads read in place and, in compiled training, a faster backward. The KV cache is transformers' own
`DynamicCache`, so `generate` works unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from ..errors import XmodelError
from .configuration_xmodel import XmodelConfig
from .cpu_attention import CPU_ATTENTION
from .fused_loss import linear_cross_entropy
from .loading import check_checkpoint_matches_config

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask


class XmodelRMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 (as Llama does) so bf16 activations keep their precision here.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class XmodelRotaryEmbedding(nn.Module):
    """cos/sin tables of RoPE for the given positions (the rotate-half layout of Llama)."""

    def __init__(self, config: XmodelConfig):
        super().__init__()
        self.config = config
        self.register_buffer("inv_freq", self.compute_inv_freq(config), persistent=False)

    @staticmethod
    def compute_inv_freq(config: XmodelConfig) -> torch.Tensor:
        dim = config.head_dim
        return 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(x.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, heads, T, hd); cos/sin: (B, T, hd)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return x * cos + rotate_half(x) * sin


def eager_attention_forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                            attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0, **kwargs):
    """Attention in plain tensor ops (the "eager" implementation, as Llama's): the mask is additive."""
    key = key.repeat_interleave(module.num_key_value_groups, dim=1)
    value = value.repeat_interleave(module.num_key_value_groups, dim=1)
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


def attention_implementation(config: XmodelConfig, query: torch.Tensor) -> str:
    """The registered attention to run: the configured one, except that "sdpa" on CPU runs as "xmodel_cpu".

    Both are the same SDPA kernel. Xmodel's reads grouped K/V heads in place (transformers' "sdpa" copies them
    repeated when there is a mask, as in the engine's compiled decoding) and gives compiled CPU training its
    faster backward (`cpu_attention`), so on CPU the default is what it was before the registry.
    "flex_attention" on a CPU where torch's kernel computes it wrongly (`flex_attention_cpu_problem`) raises
    XmodelError rather than give wrong or NaN logits.
    """
    implementation = config._attn_implementation
    if query.device.type == "cpu":
        if implementation == "sdpa":
            return CPU_ATTENTION
        if implementation == "flex_attention" and (problem := flex_attention_cpu_problem(config.head_dim)):
            raise XmodelError(problem)
    return implementation


# PyTorch's only CPU kernel for flex attention, inductor's C++ template (torch/_inductor/codegen/
# cpp_flex_attention_template.py, `micro_gemm_define`), computes Q·Kᵀ with a micro-GEMM blocked 16 keys wide whatever
# the vector width. Where a vector holds fewer floats (AVX2: 8) and head_dim is a multiple of that width below 24 (8 or
# 16), the GEMM's partial-block branch (`cpp_micro_gemm.py`, `ntail_transpose_b_kernel`, "first implementation") takes a
# block of 8 keys for 16: it reads 8 key rows past the block (past the end of K for the last head) and writes 8 scores
# past its output — after a block's last query row, over the running row maxima of the online softmax when the
# sequence fits one 128-token block. So whenever the keys end 8 short of a multiple of 16 (24, 40, ... tokens) the
# attention is garbage or NaN, in fp32 and bf16 alike. With 16-float vectors (AVX-512, AMX) the branch cannot be taken,
# and other head sizes take the GEMM's other branch.
FLEX_CPU_GEMM_BLOCK_N = 16  # `GemmBlocking(1, 16, 1)` in torch 2.13's template
FLEX_CPU_GEMM_TRANSPOSED_MAX_K = 24  # the branch needs head_dim < 24 · block_m (block_m = 1)


@torch.compiler.assume_constant_result
def flex_attention_cpu_problem(head_dim: int) -> str | None:
    """Why flex attention on this CPU would give wrong outputs for `head_dim`, in one line, or None if it is sound.

    Decided by the vector ISA inductor compiles for (`pick_vec_isa`: the CPU's, as capped by ATEN_CPU_CAPABILITY or
    inductor's ``cpp.simdlen``), so it holds for a real AVX2 CPU and an AVX2-capped one alike.
    """
    return _flex_attention_cpu_problem(head_dim)


@functools.cache
def _flex_attention_cpu_problem(head_dim: int) -> str | None:
    if head_dim >= FLEX_CPU_GEMM_TRANSPOSED_MAX_K:
        return None  # checked first: probing the ISA compiles test programs the first time (inductor does it anyway)
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    isa = pick_vec_isa()
    width = isa.nelements(torch.float)
    if not 0 < width < FLEX_CPU_GEMM_BLOCK_N or head_dim % width:
        return None
    return (f"attn_implementation 'flex_attention': torch {torch.__version__}'s CPU flex-attention kernel gives wrong "
            f"or NaN outputs with head_dim {head_dim} on this {isa} CPU ({width}-float vectors); "
            "use 'sdpa' or 'eager' here")


class XmodelAttention(nn.Module):
    """Grouped-query attention: `num_key_value_heads` K/V heads shared by groups of query heads."""

    def __init__(self, config: XmodelConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim ** -0.5
        self.is_causal = True
        d = config.hidden_size
        self.q_proj = nn.Linear(d, config.num_attention_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, config.num_key_value_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, config.num_key_value_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, d, bias=False)

    def forward(self, hidden_states, position_embeddings, attention_mask=None, past_key_values: Cache | None = None,
                **kwargs):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary(query_states, cos, sin), apply_rotary(key_states, cos, sin)
        if past_key_values is not None:
            key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            attention_implementation(self.config, query_states), eager_attention_forward)
        attn_output, _ = attention_interface(self, query_states, key_states, value_states, attention_mask,
                                             dropout=0.0, scaling=self.scaling, **kwargs)
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output)


class XmodelMLP(nn.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, config: XmodelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class XmodelDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: XmodelConfig, layer_idx: int):
        super().__init__()
        self.self_attn = XmodelAttention(config, layer_idx)
        self.mlp = XmodelMLP(config)
        self.input_layernorm = XmodelRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = XmodelRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.residual_scale = config.residual_scale  # μP op 2: scale_depth / sqrt(num_layers)

    def forward(self, hidden_states, position_embeddings, attention_mask=None, past_key_values=None, **kwargs):
        attn_out = self.self_attn(self.input_layernorm(hidden_states), position_embeddings, attention_mask,
                                  past_key_values, **kwargs)
        hidden_states = hidden_states + attn_out * self.residual_scale
        mlp_out = self.mlp(self.post_attention_layernorm(hidden_states))
        return hidden_states + mlp_out * self.residual_scale


# transformers 5.x renamed the KV cache argument and output field `past_key_values` to `cache`; generate()
# passes `cache=`. The forwards accept both names, and outputs fill whichever field this version has.
CACHE_FIELD = "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def cache_of(output):
    """The KV cache an output carries, under either field name."""
    return getattr(output, CACHE_FIELD, None)


class XmodelPreTrainedModel(PreTrainedModel):
    config_class = XmodelConfig
    config: XmodelConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["XmodelDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' loader, after checking a local checkpoint's tensor shapes against its config."""
        path = Path(str(pretrained_model_name_or_path))
        if path.is_dir() and not kwargs.get("ignore_mismatched_sizes"):
            config = kwargs.get("config")
            if not isinstance(config, XmodelConfig):
                config = XmodelConfig.from_pretrained(path)
            check_checkpoint_matches_config(cls, path, config)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module):
        """μP op 3: hidden 2-D weights get std init_std/sqrt(m); the embedding (and an untied LM head) init_std.

        Norm gains start at 1. Uses transformers' `initialization` helpers, which skip tensors already loaded
        from a checkpoint.
        """
        cfg = self.config
        if isinstance(module, nn.Linear):
            is_head = module is getattr(self, "lm_head", None)
            std = cfg.initializer_range if is_head else cfg.initializer_range / cfg.width_mult ** 0.5
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=cfg.initializer_range)
        elif isinstance(module, XmodelRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, XmodelRotaryEmbedding):
            init.copy_(module.inv_freq, XmodelRotaryEmbedding.compute_inv_freq(cfg))


def build_attention_mask(attention_mask: torch.Tensor | None, q_len: int, past_len: int,
                         device: torch.device) -> torch.Tensor | None:
    """Boolean (B, 1, q_len, past_len + q_len) mask, True where a query may attend.

    None when no mask is needed: no padding and either no cache (SDPA's is_causal path) or one new token that
    may see the whole cache. A padded query row may still see itself, so SDPA never softmaxes over an empty row (which gives NaN);
    its output is ignored anyway.
    """
    kv_len = past_len + q_len
    if (attention_mask is None or bool(attention_mask.all())) and (past_len == 0 or q_len == 1):
        return None
    q_pos = torch.arange(past_len, kv_len, device=device)
    k_pos = torch.arange(kv_len, device=device)
    allowed = (k_pos[None, :] <= q_pos[:, None])[None, None]  # (1, 1, q, kv)
    if attention_mask is not None:
        keys_ok = attention_mask[:, None, None, -kv_len:].bool()
        allowed = allowed & keys_ok
        allowed = allowed | (k_pos[None, :] == q_pos[:, None])[None, None]
    return allowed


def causal_mask(config: XmodelConfig, attention_mask: torch.Tensor | None, inputs_embeds: torch.Tensor,
                past_len: int) -> torch.Tensor | BlockMask | None:
    """The mask of the new positions over past + new ones, in the form the configured attention takes.

    SDPA (and "xmodel_cpu") get `build_attention_mask`'s boolean mask or None. Other implementations get what the
    mask function transformers registered for them builds from the 2-D padding mask (an additive mask for eager,
    a BlockMask for flex attention, the padding mask or None for flash attention), or None if none is registered.
    Only `get_seq_length` is read from a cache (`past_len`), as everywhere in this model.
    """
    batch, q_len = inputs_embeds.shape[:2]
    implementation = config._attn_implementation
    if implementation in ("sdpa", CPU_ATTENTION):
        return build_attention_mask(attention_mask, q_len, past_len, inputs_embeds.device)
    if implementation not in ALL_MASK_ATTENTION_FUNCTIONS:
        return None
    if attention_mask is not None:
        attention_mask = attention_mask[:, -(past_len + q_len):].to(inputs_embeds.device, torch.bool)
    return ALL_MASK_ATTENTION_FUNCTIONS[implementation](
        batch_size=batch, q_length=q_len, kv_length=past_len + q_len, q_offset=past_len, kv_offset=0,
        attention_mask=attention_mask, dtype=inputs_embeds.dtype, device=inputs_embeds.device)


class XmodelModel(XmodelPreTrainedModel):
    def __init__(self, config: XmodelConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(XmodelDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = XmodelRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = XmodelRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, output_hidden_states=None, cache=None, **kwargs):
        past_key_values = cache if cache is not None else past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids) * self.config.scale_emb  # μP op 1
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None and not self.training:
            past_key_values = DynamicCache(config=self.config)
        if attention_mask is not None and attention_mask.dim() == 4:
            # A (B, 1, q, kv) mask built by the caller, in the form the attention implementation takes (boolean for
            # SDPA), is used as given — the engine's compiled decode step attends over a fixed-size cache window
            # this way, without reading the cache's length.
            if position_ids is None:
                raise ValueError("a 4-D attention mask needs explicit position_ids")
            mask = attention_mask
        else:
            past_len = past_key_values.get_seq_length() if past_key_values is not None else 0
            q_len = inputs_embeds.shape[1]
            if position_ids is None:
                position_ids = torch.arange(past_len, past_len + q_len, device=inputs_embeds.device)[None]
            mask = causal_mask(self.config, attention_mask, inputs_embeds, past_len)
        position_embeddings = self.rotary_emb(inputs_embeds, position_ids)

        hidden_states = inputs_embeds
        all_hidden = [] if output_hidden_states else None
        for layer in self.layers:
            if all_hidden is not None:
                all_hidden.append(hidden_states)
            hidden_states = layer(hidden_states, position_embeddings, mask, past_key_values, **kwargs)
        hidden_states = self.norm(hidden_states)
        if all_hidden is not None:
            all_hidden.append(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states,
                                       hidden_states=tuple(all_hidden) if all_hidden is not None else None,
                                       **{CACHE_FIELD: past_key_values if use_cache else None})


class XmodelForCausalLM(XmodelPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: XmodelConfig):
        super().__init__(config)
        self.model = XmodelModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                logits_to_keep: int = 0, num_items_in_batch=None, return_logits: bool = True, cache=None,
                **kwargs) -> CausalLMOutputWithPast:
        """As LlamaForCausalLM's forward. With labels and ``return_logits=False`` the loss is computed chunk by
        chunk without materialising the B·T·V logits (`xmodel.model.fused_loss`) and ``logits`` is None."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache if cache is not None else past_key_values,
                         inputs_embeds=inputs_embeds, use_cache=use_cache, output_hidden_states=output_hidden_states,
                         **kwargs)
        hidden = out.last_hidden_state / self.config.width_mult  # μP op 5: logits ÷ m
        if labels is not None and not return_logits:
            targets = shift_labels(labels.to(hidden.device))
            total = linear_cross_entropy(hidden, self.lm_head.weight, targets)
            count = num_items_in_batch if num_items_in_batch is not None else (targets != -100).sum()
            return CausalLMOutputWithPast(loss=total / count, logits=None, hidden_states=out.hidden_states,
                                          **{CACHE_FIELD: cache_of(out)})
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = causal_lm_loss(logits, labels, num_items_in_batch)
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                      **{CACHE_FIELD: cache_of(out)})


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Targets aligned with each position's logits: the next label, -100 after the last."""
    return F.pad(labels, (0, 1), value=-100)[:, 1:]


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Next-token cross-entropy in fp32; -100 labels are ignored (transformers' convention).

    The labels are shifted (padded with -100 at the end) rather than the logits sliced, which would copy
    B·T·V values. With `num_items_in_batch` the summed loss is divided by it, so gradient-accumulated
    micro-batches add up to the mean over the whole batch.
    """
    targets = shift_labels(labels.to(logits.device))
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                           reduction=reduction)
    if num_items_in_batch is not None:
        loss = loss / num_items_in_batch
    return loss


__all__ = ["XmodelModel", "XmodelForCausalLM", "XmodelPreTrainedModel"]
