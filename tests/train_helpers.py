"""A synthetic, learnable sequence source for trainer-mechanics tests (real-data tests use the data pipeline)."""

import torch

from xmodel.config import load_config


class PatternSource:
    """Sequence i is an arithmetic progression modulo the vocabulary, fixed by (seed, i): easy to learn,
    deterministic by position like the real sampler."""

    def __init__(self, vocab: int, seq_len: int, seed: int = 0):
        self.vocab, self.seq_len, self.seed = vocab, seq_len, seed

    def batch(self, start: int, count: int) -> dict:
        rows = []
        for i in range(start, start + count):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
            a = int(torch.randint(3, self.vocab, (1,), generator=g))
            b = int(torch.randint(1, 8, (1,), generator=g))
            rows.append((a + b * torch.arange(self.seq_len)) % (self.vocab - 3) + 3)
        ids = torch.stack(rows)
        return {"input_ids": ids, "labels": ids.clone()}


def tiny_train_config(tmp_steps=8, **train_overrides):
    overrides = {"model.vocab_size": 97, "model.hidden_size": 64, "model.intermediate_size": 128,
                 "model.num_hidden_layers": 2, "model.num_attention_heads": 4, "model.num_key_value_heads": 2,
                 "model.max_position_embeddings": 64, "train.max_steps": tmp_steps, "train.micro_batch_size": 2,
                 "train.batch_tokens": 4 * 32, "train.schedule.max_lr": 0.01, "train.schedule.warmup_steps": 2,
                 "train.log_every": 1, "train.save_every": 4, "train.eval_every": 0, "train.sample_prompts": [],
                 "train.peak_flops": 1e11, "train.precision": "fp32"}
    overrides.update({f"train.{k}" if not k.startswith(("train.", "model.")) else k: v
                      for k, v in train_overrides.items()})
    return load_config("nano", overrides=overrides)
