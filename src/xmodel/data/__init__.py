"""Data pipeline: ingestion, dedup, SFT formatting, packed shards and the stable/decay mixture sampler.

Entry points (each module is readable alone):

- `root.data_root` — the one configurable data root.
- `config.DataConfig` — the `data` config section.
- `prepare.prepare_data` — sources → deduplicated, tokenised, packed shards + manifest (datatrove pipeline).
- `manifest.load_manifest` — what a prepared directory holds (per-source counts, split statistics).
- `shards.PackedDataset`, `shards.check_tokenizer` — reading shards; refusing a foreign tokenizer.
- `mixture.build_sampler` — deterministic (seed, position) → batch sampler over a stage mixture.
- `batches` — the batch contract (`IGNORE_INDEX`, `BatchSource`); `heldout.HeldoutSource` — eval batches.

Layers, lowest first (a module imports only from layers below it; tests/test_layering.py checks it):
root, weights, atomic, permute, simhash, batches → config → ingest → sft → plan → manifest → shards, dedup →
heldout, mixture → pipeline → prepare.
"""

# The main entry points, imported on first use (so `import xmodel.config` does not load datatrove).
_LAZY = {
    "data_root": ".root", "DataConfig": ".config", "prepare_data": ".prepare", "PackedDataset": ".shards",
    "Manifest": ".manifest", "load_manifest": ".manifest", "check_tokenizer": ".shards", "check_vocab": ".shards",
    "build_sampler": ".mixture", "MixtureSampler": ".mixture", "mixture_record": ".mixture",
    "IGNORE_INDEX": ".batches", "BatchSource": ".batches", "HeldoutSource": ".heldout",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_LAZY)
