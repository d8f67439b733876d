"""Data pipeline: ingestion, dedup, SFT formatting, packed shards and the stable/decay mixture sampler.

Entry points (each module is readable alone):

- `root.data_root` — the one configurable data root.
- `config.DataConfig` — the `data` config section.
- `prepare.prepare_data` — sources → deduplicated, tokenised, packed shards + manifest (datatrove pipeline).
- `shards.PackedDataset`, `shards.check_tokenizer` — reading shards; refusing a foreign tokenizer.
- `mixture.build_sampler` — deterministic (seed, position) → batch sampler over a stage mixture.
"""

# The main entry points, imported on first use (so `import xmodel.config` does not load datatrove).
_LAZY = {
    "data_root": ".root", "DataConfig": ".config", "prepare_data": ".prepare", "PackedDataset": ".shards",
    "Manifest": ".shards", "load_manifest": ".shards", "check_tokenizer": ".shards", "check_vocab": ".shards",
    "build_sampler": ".mixture", "MixtureSampler": ".mixture",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
