"""`xmodel data prepare|stats`: build deduplicated, packed shards; report what they hold and the mixtures."""

from __future__ import annotations

import json

from .common import add_data_root_arg, add_config_args, human


def register(sub) -> None:
    p = sub.add_parser("data", help="prepare packed training data or report on it",
                       description="Ingest, deduplicate, format (SFT), tokenise and pack the data config's sources "
                                   "with datatrove pipelines; report per-source counts and the stage mixtures.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    p.set_defaults(func=lambda args: p.print_help() or 0)

    q = actions.add_parser("prepare", help="sources → deduplicated packed shards + manifest",
                           description="Read data.sources and data.decay.sft (jsonl/jsonl.gz, text, parquet, "
                                       "datasets), remove exact and SimHash near-duplicates, format SFT records "
                                       "with the chat template, tokenise, append EOS, pack into seq_len sequences "
                                       "and write memory-mapped shards. Rerunning continues an interrupted run; "
                                       "a finished directory is left as is.")
    q.add_argument("--tokenizer", help="tokenizer directory (default: data.tokenizer.path)")
    q.add_argument("--out", required=True, help="output directory")
    add_data_root_arg(q)
    q.add_argument("--workers", type=int, help="processes (default: data.workers; does not change the output)")
    q.add_argument("--overwrite", action="store_true", help="replace a directory prepared with other settings")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.add_argument("--slurm-partition", metavar="PARTITION",
                   help="submit the stages to Slurm (datatrove's SlurmPipelineExecutor) instead of running here; "
                        "data.tasks tasks per stage, each a job-array element")
    q.add_argument("--slurm-time", default="24:00:00", help="time limit of each Slurm task (default 24:00:00)")
    q.add_argument("--slurm-cpus-per-task", type=int, default=1, help="CPUs per Slurm task (default 1)")
    q.add_argument("--slurm-mem-per-cpu-gb", type=int, default=4, help="memory per CPU in GB (default 4)")
    q.add_argument("--slurm-venv", metavar="ACTIVATE",
                   help="script the Slurm jobs source to get this environment (default: <current venv>/bin/activate)")
    add_config_args(q)
    q.set_defaults(func=run_prepare)

    s = actions.add_parser("stats", help="per-source documents, tokens, duplicate rates, mixture shares",
                           description="Per source: documents read, skipped records (by reason), exact and near "
                                       "duplicates removed, training and held-out sequences; then each stage "
                                       "mixture's configured and realised shares over --sequences positions. "
                                       "Given a training run (its directory or config.json): the mixture that "
                                       "run trained on.")
    s.add_argument("prepared", help="a prepared data directory, or a run directory / its config.json")
    s.add_argument("--stage", choices=["stable", "decay", "both"], default="both")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--sequences", type=int, default=10_000, help="positions to sample for realised shares")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=run_stats)


def run_prepare(args) -> int:
    from ..data.config import resolve_config_path
    from ..data.prepare import prepare_data
    from ..errors import XmodelError
    from .common import config_from_args

    args.config = resolve_config_path(args.config)
    cfg = config_from_args(args).data
    tokenizer = args.tokenizer or cfg.tokenizer.path
    if not tokenizer:
        raise XmodelError("--tokenizer: no tokenizer given (and data.tokenizer.path is not set); "
                          "train one with `xmodel tokenizer train`")
    if args.slurm_partition:
        import sys
        from pathlib import Path

        from ..data.prepare import slurm_executors

        activate = Path(sys.prefix) / "bin" / "activate"
        venv = args.slurm_venv or (str(activate) if activate.is_file() else None)
        executors = slurm_executors(cfg, tokenizer, args.out, args.data_root, partition=args.slurm_partition,
                                    time_limit=args.slurm_time, overwrite=args.overwrite,
                                    cpus_per_task=args.slurm_cpus_per_task,
                                    mem_per_cpu_gb=args.slurm_mem_per_cpu_gb, venv_path=venv)
        executors[-1].run()  # submits every stage, each depending on the previous one
        ids = ", ".join(f"{e.job_name}={e.job_id}" for e in executors if getattr(e, "job_id", None))
        print(f"submitted {len(executors)} Slurm stages ({ids}); when they finish, `xmodel data stats {args.out}`")
        return 0
    manifest = prepare_data(cfg, tokenizer, args.out, args.data_root, overwrite=args.overwrite,
                            workers=args.workers, progress=not args.no_progress)
    skipped = {n: s["skipped"]["counts"] for n, s in manifest.sources.items() if s["skipped"]["counts"]}
    for name, counts in skipped.items():
        examples = manifest.sources[name]["skipped"]["examples"]
        print(f"  {name}: skipped {sum(counts.values())} records "
              f"({', '.join(f'{k.replace(chr(95), chr(32))}: {v}' for k, v in counts.items())}); e.g. {examples[0]}")
    print(f"run `xmodel data stats {args.out}` for per-source counts and mixture shares")
    return 0


def _mixture(manifest, stage: str, seed: int, sequences: int) -> dict | str:
    from ..data.mixture import build_sampler
    from ..errors import XmodelError

    try:
        sampler = build_sampler(manifest, None, stage, seed)
    except XmodelError as e:
        return str(e)
    return {"configured": sampler.weights, "realised": sampler.shares(0, sequences)}


def stats(prepared: str, stage: str = "both", seed: int = 0, sequences: int = 10_000) -> dict:
    from ..data.manifest import load_manifest

    m = load_manifest(prepared)
    out = {"path": str(m.path), "tokenizer_hash": m.tokenizer_hash, "vocab_size": m.vocab_size, "dtype": m.dtype,
           "seq_len": m.seq_len, "sources": {}, "mixtures": {}}
    for name, s in m.sources.items():
        read = s["documents_read"]
        removed = s["exact_removed"] + s["near_removed"]
        train, heldout = m.split(name, "train"), m.split(name, "heldout")
        out["sources"][name] = {
            "kind": s["kind"], "documents_read": read, "skipped": sum(s["skipped"]["counts"].values()),
            "exact_removed": s["exact_removed"], "near_removed": s["near_removed"],
            "duplicate_rate": removed / read if read else 0.0,
            "train_documents": train.documents, "train_sequences": train.sequences, "train_tokens": train.tokens,
            "heldout_sequences": heldout.sequences, "tokens_dropped": train.tokens_dropped + heldout.tokens_dropped,
            "skip_examples": s["skipped"]["examples"]}
    stages = ["stable", "decay"] if stage == "both" else [stage]
    for st in stages:
        out["mixtures"][st] = _mixture(m, st, seed, sequences)
    out["mixture_positions"] = sequences
    out["seed"] = seed
    return out


def is_run(path: str) -> bool:
    """A training run's config.json, or a run directory (one with a config.json and no manifest.json)."""
    from pathlib import Path

    from ..data.manifest import MANIFEST
    from ..data.mixture import RUN_CONFIG

    p = Path(path)
    return p.is_file() or (p.is_dir() and (p / RUN_CONFIG).is_file() and not (p / MANIFEST).is_file())


def print_run_mixture(run: str, as_json: bool) -> int:
    from ..data.mixture import load_mixture_record

    record = load_mixture_record(run)
    if as_json:
        print(json.dumps(record, indent=2, ensure_ascii=False))
        return 0
    print(f"{run}: {record['stage'] or 'custom'} mixture of {record['prepared']} (seed {record['seed']}, blocks of "
          f"{record['block']:,} sequences of {record['seq_len']} tokens, tokenizer {record['tokenizer_hash']})")
    rows = [[name, f"{100 * s['weight']:.2f}%", f"{s['per_block']:,}", f"{100 * s['share']:.2f}%",
             f"{s['train_sequences']:,}"] for name, s in record["sources"].items()]
    _table(["source", "configured", "per block", "trained", "train seqs"], rows, indent="  ")
    return 0


def run_stats(args) -> int:
    if is_run(args.prepared):
        return print_run_mixture(args.prepared, args.json)
    result = stats(args.prepared, args.stage, args.seed, args.sequences)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"{result['path']}: seq_len {result['seq_len']}, tokenizer {result['tokenizer_hash']} "
          f"({result['vocab_size']:,} entries, {result['dtype']})")
    head = ["source", "kind", "docs read", "skipped", "exact dup", "near dup", "dup rate", "train docs",
            "train seqs", "train tokens", "held-out seqs"]
    rows = [[n, s["kind"], f"{s['documents_read']:,}", f"{s['skipped']:,}", f"{s['exact_removed']:,}",
             f"{s['near_removed']:,}", f"{100 * s['duplicate_rate']:.2f}%", f"{s['train_documents']:,}",
             f"{s['train_sequences']:,}", human(s["train_tokens"]), f"{s['heldout_sequences']:,}"]
            for n, s in result["sources"].items()]
    _table(head, rows)
    for name, s in result["sources"].items():
        if s["skip_examples"]:
            print(f"  {name} skipped, e.g.: {'; '.join(s['skip_examples'][:3])}")
    for st, mix in result["mixtures"].items():
        print(f"\n{st} mixture (seed {result['seed']}, first {result['mixture_positions']:,} sequences):")
        if isinstance(mix, str):
            print(f"  not available: {mix}")
            continue
        rows = [[n, f"{100 * w:.2f}%", f"{100 * mix['realised'][n]:.2f}%",
                 f"{100 * (mix['realised'][n] - w):+.2f}"] for n, w in mix["configured"].items()]
        _table(["source", "configured", "realised", "diff (points)"], rows, indent="  ")
    return 0


def _table(head, rows, indent=""):
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]
    for line in [head, ["-" * w for w in widths], *rows]:
        print(indent + "  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip())
