"""Which precision to compute in: on a CPU, bf16 only where a measured matrix product says it is faster.

A CPU multiplies bf16 matrices natively only with AMX or AVX512-BF16 (Sapphire Rapids, Zen 4 and later); on
an AVX2-only CPU (most laptops, AMD before Zen 4, Intel consumer chips) PyTorch emulates them, 10–30× slower
than fp32 — so "bf16 wherever autocast exists" made CPU training crawl there. The instruction sets alone do not
settle it (an AVX-512 CPU without BF16 runs oneDNN's bf16 kernels too, by conversion), so `choose_precision`
times one product of the model's own shape in both dtypes, once per process and shape, and records what it saw:

    choice = choose_precision("auto", torch.device("cpu"), probe_shape(hidden=512, intermediate=1280))
    choice.name           # "bf16" or "fp32"
    choice.autocast_dtype # torch.bfloat16 or None
    str(choice)           # the log line: what was chosen, the two rates, the CPU
    choice.to_dict()      # what config.json records

Timings interleave the two dtypes and keep each one's fastest: another process on the machine slows both, and
no contention can make a kernel look faster than it is. On CUDA, bf16 where the GPU supports it (no timing).
"""

from __future__ import annotations

import functools
import platform
import time
from dataclasses import asdict, dataclass

import torch

# bf16 is chosen when its product runs at least this much faster than fp32's: autocast also pays for casts
# and bf16 element-wise kernels that a GEMM timing does not see, so a near tie is left to fp32 (exact, no casts).
BF16_MIN_SPEEDUP = 1.2
# The probe's work: small enough that an emulated bf16 product (≈ 1 GFLOP/s) takes a fraction of a second.
PROBE_FLOPS = 2.5e8
PROBE_SECONDS = 0.3

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class MatmulRates:
    """FLOP/s of an (m × k) @ (k × n) product in fp32 and in a half precision (bf16 unless said), each the
    fastest of interleaved timings."""

    shape: tuple[int, int, int]
    fp32: float
    half: float
    threads: int
    half_name: str = "bf16"
    cpu: str = ""                    # `cpu_description()` of the machine measured

    @property
    def speedup(self) -> float:
        """How many times faster the half-precision product ran than fp32's."""
        return self.half / self.fp32

    def to_dict(self) -> dict:
        return {"shape": list(self.shape), "threads": self.threads, "fp32": round(self.fp32 / 1e9, 2),
                self.half_name: round(self.half / 1e9, 2), "cpu": self.cpu}

    def __str__(self) -> str:
        m, k, n = self.shape
        return (f"matmul {m}×{k}×{n}, {self.threads} thread(s): {self.half_name} {self.half / 1e9:.1f} vs fp32 "
                f"{self.fp32 / 1e9:.1f} GFLOP/s on {self.cpu}")


@dataclass(frozen=True)
class Precision:
    """The precision a run computes in, what was asked for, and why."""

    name: str                        # "fp32" or "bf16"
    requested: str                   # "auto", "fp32" or "bf16"
    reason: str
    device: str
    rates: MatmulRates | None = None  # the CPU measurement behind the choice, if one was made

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The autocast dtype for training and evaluation passes (None: plain fp32)."""
        return torch.bfloat16 if self.name == "bf16" else None

    @property
    def torch_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.name == "bf16" else torch.float32

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k != "rates"}
        if self.rates is not None:
            out["matmul_gflops"] = self.rates.to_dict()
        return out

    def __str__(self) -> str:
        text = f"precision {self.name} ({self.requested}: {self.reason})"
        return text + (f"; {self.rates}" if self.rates is not None else "")


def probe_shape(hidden: int, intermediate: int, tokens: int = 256) -> tuple[int, int, int]:
    """The model's own product (tokens × hidden) @ (hidden × intermediate), with the token count cut so the
    probe stays near `PROBE_FLOPS` (a 1.2B model's shape would otherwise take seconds in emulated bf16)."""
    k, n = max(int(hidden), 1), max(int(intermediate), 1)
    m = max(8, min(int(tokens), int(PROBE_FLOPS / (2 * k * n))))
    return m, k, n


HALF_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16"}


@functools.lru_cache(maxsize=None)
def measure_matmul(m: int, k: int, n: int, half: torch.dtype = torch.bfloat16) -> MatmulRates:
    """fp32 and `half` rates of one product shape on the CPU, cached for the process. One warm-up call each,
    then timed pairs in turn (fp32, half) for about `PROBE_SECONDS`, at least two pairs and at most ten."""
    gen = torch.Generator().manual_seed(0)
    operands = {dtype: (torch.randn(m, k, generator=gen).to(dtype), torch.randn(k, n, generator=gen).to(dtype))
                for dtype in (torch.float32, half)}
    best = {dtype: float("inf") for dtype in operands}
    for a, b in operands.values():
        torch.mm(a, b)  # first call: allocation and the library's one-time setup
    start, pairs = time.perf_counter(), 0
    while pairs < 2 or (pairs < 10 and time.perf_counter() - start < PROBE_SECONDS):
        for dtype, (a, b) in operands.items():
            t0 = time.perf_counter()
            torch.mm(a, b)
            best[dtype] = min(best[dtype], time.perf_counter() - t0)
        pairs += 1
    flops = 2.0 * m * k * n
    return MatmulRates(shape=(m, k, n), fp32=flops / best[torch.float32], half=flops / best[half],
                       threads=torch.get_num_threads(), half_name=HALF_NAMES[half], cpu=cpu_description())


@functools.lru_cache(maxsize=None)
def cpu_description() -> str:
    """The CPU's model name and the instruction sets that decide bf16 speed, e.g.
    "AMD EPYC 9B14 [AVX-512 BF16; torch: AVX512]"."""
    name, flags = "", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the platform's own name, no instruction sets
        pass
    name = name or platform.processor() or platform.machine()
    if {"amx_bf16", "amx_tile"} <= flags:
        isa = "AMX"
    elif "avx512_bf16" in flags:
        isa = "AVX-512 BF16"
    elif "avx512f" in flags:
        isa = "AVX-512, no BF16"
    elif "avx2" in flags:
        isa = "AVX2"
    else:
        isa = ", ".join(sorted(flags & {"asimd", "bf16", "sve", "sve2"})) or "instruction sets unknown"
    return f"{name} [{isa}; torch: {torch.backends.cpu.get_cpu_capability()}]"


def choose_precision(requested: str, device: torch.device | str, shape: tuple[int, int, int] | None = None,
                     ) -> Precision:
    """The precision for `requested` ("auto", "fp32", "bf16") on `device`; on a CPU "auto" times `shape`
    (default: `probe_shape(512, 1280)`, the `tiny` preset's MLP) in both dtypes and takes bf16 only when it is
    at least `BF16_MIN_SPEEDUP` times faster. An explicit "bf16" on a CPU is measured too, so the log can say
    when it is the slower choice."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}: one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if requested == "fp32":
        return Precision("fp32", requested, "as set", str(device))
    if device.type == "cuda":
        if requested == "bf16" or torch.cuda.is_bf16_supported():
            return Precision("bf16", requested, "as set" if requested == "bf16" else "the GPU supports bf16",
                             str(device))
        return Precision("fp32", requested, "this GPU has no bf16", str(device))
    if device.type != "cpu":
        return Precision(requested if requested == "bf16" else "fp32", requested,
                         "as set" if requested == "bf16" else f"no bf16 autocast rule for {device.type}", str(device))
    rates = measure_matmul(*(shape or probe_shape(512, 1280)))
    faster = rates.speedup >= BF16_MIN_SPEEDUP
    if requested == "bf16":
        reason = "as set" if faster else f"as set, though bf16 measured {1 / rates.speedup:.1f}× slower here"
        return Precision("bf16", requested, reason, str(device), rates)
    reason = (f"bf16 measured {rates.speedup:.2f}× fp32" if faster else
              f"bf16 measured {rates.speedup:.2f}× fp32, under the {BF16_MIN_SPEEDUP}× it must reach")
    return Precision("bf16" if faster else "fp32", requested, reason, str(device), rates)


def cpu_weights_dtype(weights: torch.dtype, hidden: int, intermediate: int) -> tuple[torch.dtype, str | None]:
    """The dtype to run a checkpoint stored in `weights` on a CPU when none was asked for: its own, except a
    half precision (bf16, fp16) whose product of the model's MLP shape measures under `BF16_MIN_SPEEDUP`×
    fp32 here — then fp32, and the reason as a line to print. fp32 checkpoints stay fp32 (the numbers they
    were saved to give)."""
    if weights not in HALF_NAMES:
        return weights, None
    rates = measure_matmul(*probe_shape(hidden, intermediate), half=weights)
    if rates.speedup >= BF16_MIN_SPEEDUP:
        return weights, None
    return torch.float32, (f"{rates.half_name} weights computed in fp32: {rates.half_name} measured "
                           f"{rates.speedup:.2f}× fp32 on this CPU ({rates})")


def benchmark_precisions(option: str, device: torch.device | str, shape: tuple[int, int, int]
                         ) -> tuple[list[str], Precision]:
    """The precisions a benchmark's own variants run in for its `--precision` option: "both" → fp32 and bf16;
    "auto", "fp32", "bf16" → the one `choose_precision` gives (so "auto" follows the trainer's rule); with
    the choice behind it, for the benchmark to print."""
    choice = choose_precision("auto" if option == "both" else option, device, shape)
    return (["fp32", "bf16"] if option == "both" else [choice.name]), choice
