"""Generation tokens/s: xmodel's engine against transformers' `generate` on the same weights, and llama.cpp.

One random-weight model of a preset (default `tiny`: d512, 21 layers, 65,280 vocabulary) is run by

* ``hf generate (Xmodel)``      transformers' `generate` on `XmodelForCausalLM` (dynamic cache) — the baseline
* ``hf generate (Llama)``       transformers' `generate` on the μP-folded `LlamaForCausalLM` export
* ``hf generate (Llama, static)`` the same with transformers' static cache
* ``xmodel engine``             `xmodel.inference.Generator` (preallocated KV cache, own decode loop)
* ``xmodel engine, compiled``   the same with ``compile=True``: each decode step one `torch.compile`d graph
                                 (frozen weights, max-autotune GEMMs); its compile time is printed, not timed
* ``xmodel engine, int8 weights`` the same after `quantize_int8` (int8 weight-only linears, bf16 elsewhere —
                                 not the same numbers: a speed option, compared with both precisions' baseline)
* ``llama.cpp <type>``          the GGUF export in llama-cpp-python (batch 1; skipped if not installed)

each for batch 1 and batch 8, greedy, `--new` tokens after a `--prompt`-token prompt, in the precision the
loader's rule picks on this CPU (`--precision auto`: bf16 only where a bf16 product of the model's MLP shape
measures ≥ 1.2× fp32, as `xmodel chat` runs a bf16 checkpoint; `both`: fp32 and bf16; llama.cpp is not
affected). Systems alternate within each round; the median of `--rounds` rounds is reported with
the ratio to the baseline of the same precision and batch. Goal: the engine ≥ 2× transformers' generate.

    python benchmarks/bench_generate.py [--preset tiny] [--prompt 32] [--new 64] [--rounds 3] [--threads N]
                                        [--precision auto|fp32|bf16|both]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from xmodel import XmodelForCausalLM
from xmodel.config import load_config
from xmodel.export.llama import to_llama
from xmodel.inference import Generator, SamplingParams
from xmodel.inference.quantize import quantize_int8
from xmodel.model.precision import benchmark_precisions, cpu_description, probe_shape


class IdsOnly:
    """The engine needs a tokenizer only to turn ids into text; the benchmark measures tokens."""

    def decode(self, ids, skip_special_tokens=True):
        return ""


def hf_runner(model, ids, new, cache=None):
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0)
    if cache:
        kwargs["cache_implementation"] = cache

    def run():
        with torch.inference_mode():
            model.generate(ids, attention_mask=torch.ones_like(ids), **kwargs)
    return run


def engine_runner(model, ids, new, compile=False):
    generator = Generator(model, IdsOnly(), compile=compile)
    prompts = ids.tolist()

    def run():
        generator.complete(prompts, [SamplingParams(max_new_tokens=new)] * len(prompts))
    return run


def llama_cpp_runner(gguf_path, ids, new, threads):
    import llama_cpp

    llm = llama_cpp.Llama(str(gguf_path), n_ctx=ids.shape[1] + new + 8, n_threads=threads, n_batch=512,
                          verbose=False)
    prompt = ids[0].tolist()

    def run():
        for i, _ in enumerate(llm.generate(prompt, top_k=1, temp=0.0, reset=True)):
            if i + 1 == new:
                break
    run.close = llm.close
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-llama-cpp", action="store_true")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "both"],
                    help="auto: the loader's rule for this CPU (fp32 where bf16 products are slower); both: fp32 "
                         "and bf16")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled engine (1-2 min of compiling "
                                                                "per batch and precision on a CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = load_config(args.preset).model
    model = XmodelForCausalLM(cfg).eval()
    llama = to_llama(model).eval()
    int8 = quantize_int8(copy.deepcopy(model))
    print(f"preset {args.preset}: d{cfg.hidden_size} L{cfg.num_hidden_layers} V{cfg.vocab_size}, prompt {args.prompt}"
          f" + {args.new} new tokens, greedy, {args.threads} threads, torch {torch.__version__}, {cpu_description()}")
    precisions, choice = benchmark_precisions(args.precision, "cpu", probe_shape(cfg.hidden_size,
                                                                                 cfg.intermediate_size))
    print(choice)

    gguf_files = {}
    tmp = tempfile.TemporaryDirectory()
    if not args.no_llama_cpp:
        try:
            import llama_cpp  # noqa: F401
            gguf_files = export_ggufs(model, Path(tmp.name))
        except ImportError:
            print("llama-cpp-python not installed: llama.cpp rows skipped (pip install 'xmodel[llama-cpp]')")

    weights = sum(p.numel() for p in model.parameters())  # the tied head counts once
    speeds = [read_speed(weights)]
    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        ids = torch.randint(4, cfg.vocab_size, (batch, args.prompt))
        for dtype in [torch.bfloat16 if p == "bf16" else torch.float32 for p in precisions]:
            ours, hf_llama = copy.deepcopy(model).to(dtype), copy.deepcopy(llama).to(dtype)
            systems = {
                "hf generate (Xmodel)": hf_runner(ours, ids, args.new),
                "hf generate (Llama)": hf_runner(hf_llama, ids, args.new),
                "hf generate (Llama, static cache)": hf_runner(hf_llama, ids, args.new, "static"),
                "xmodel engine": engine_runner(ours, ids, args.new),
                "xmodel engine, int8 weights": engine_runner(int8, ids, args.new),
            }
            if not args.no_compile:
                systems["xmodel engine, compiled"] = engine_runner(ours, ids, args.new, compile=True)
            if dtype == torch.float32 and batch == 1:
                for name, path in gguf_files.items():
                    systems[f"llama.cpp {name}"] = llama_cpp_runner(path, ids, args.new, args.threads)
            times = {name: [] for name in systems}
            for name, run in systems.items():  # warm-up (and compiling)
                t0 = time.perf_counter()
                run()
                if "compiled" in name:
                    print(f"batch {batch} {dtype}: compiling and a first run took {time.perf_counter() - t0:.0f} s")
            for r in range(args.rounds):
                order = list(systems.items())
                for name, run in order if r % 2 == 0 else order[::-1]:
                    t0 = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - t0)
            for run in systems.values():
                getattr(run, "close", lambda: None)()
            base = statistics.median(times["hf generate (Xmodel)"])
            label = "fp32" if dtype == torch.float32 else "bf16"
            for name, ts in times.items():
                t = statistics.median(ts)
                results.append((batch, label, name, batch * args.new / t, base / t))
            del ours, hf_llama
    print(f"\n| batch | precision | system | tokens/s | vs hf generate (Xmodel) |\n|---|---|---|---|---|")
    for batch, label, name, tps, ratio in results:
        print(f"| {batch} | {label} | {name} | {tps:.1f} | {ratio:.2f}x |")
    speeds.append(read_speed(weights))
    print_bandwidth_ceiling(weights, speeds, results)
    tmp.cleanup()


def read_speed(weights: int) -> float:
    """Bytes/s of the faster of a sum and a matrix-vector product over a weight-sized fp32 buffer (medians of 5)."""
    rows = torch.ones(weights // 512, 512)
    vector = torch.ones(512)
    speeds = []
    for read in (rows.sum, lambda: torch.mv(rows, vector)):
        timings = []
        for _ in range(6):
            t0 = time.perf_counter()
            read()
            timings.append(time.perf_counter() - t0)
        speeds.append(rows.numel() * 4 / statistics.median(timings[1:]))
    return max(speeds)


def print_bandwidth_ceiling(weights: int, speeds: list[float], results) -> None:
    """At batch 1 every weight is read once per token, so the machine's read speed bounds tokens/s for any
    implementation. The speed is probed before and after the runs (this VM's speed drifts) and the faster
    probe used; a probe is not a datasheet figure, so a system may come out a little above the bound."""
    bandwidth = max(speeds)
    print(f"\nread speed {' / '.join(f'{s / 1e9:.1f}' for s in speeds)} GB/s (before / after); at batch 1, "
          "reading every weight once per token caps any implementation at about:")
    for batch, label, name, tps, ratio in results:
        if batch == 1 and name == "hf generate (Xmodel)":
            ceiling = bandwidth / (weights * (4 if label == "fp32" else 2))
            print(f"  {label}: {ceiling:.0f} tokens/s = {ceiling / tps:.2f}x hf generate")


def export_ggufs(model, folder: Path) -> dict[str, Path]:
    """GGUF files of the benchmark model (f32, f16, q8_0) with a stand-in byte-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from xmodel.export.gguf_file import export_gguf

    # The GGUF format carries a tokenizer; the benchmark feeds token ids, so any Unigram vocabulary of the
    # model's size will do: numbered pieces.
    pieces = [("<unk>", 0.0)] + [(f"▁t{i}", -1.0) for i in range(1, model.config.vocab_size)]
    tok = Tokenizer(models.Unigram(pieces, unk_id=0))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    model_dir = folder / "model"
    model.save_pretrained(model_dir)
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>").save_pretrained(model_dir)
    return {t: export_gguf(model_dir, folder / f"m-{t}.gguf", t)[0] for t in ("f32", "f16", "q8_0")}


if __name__ == "__main__":
    main()
