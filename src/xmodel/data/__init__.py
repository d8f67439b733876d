"""Data pipeline: ingestion, dedup, SFT formatting, packed shards and the stable/decay mixture sampler.

Entry points (each module is readable alone):

- `root.data_root` — the one configurable data root.
- `config.DataConfig` — the `data` config section.
- `prepare.prepare_data` — sources → deduplicated, tokenised, packed shards + manifest (datatrove pipeline).
- `shards.PackedDataset`, `shards.check_tokenizer` — reading shards; refusing a foreign tokenizer.
- `mixture.build_sampler` — deterministic (seed, position) → batch sampler over a stage mixture.
"""
