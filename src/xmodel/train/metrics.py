"""Run metrics: one JSON line per logged step, TensorBoard events, and PNG plots at the end.

Only the main rank writes. On resume, lines after the resumed step are dropped first, so the file reads as
one uninterrupted run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch


class MetricsLogger:
    def __init__(self, run_dir: Path, enabled: bool = True, resume_step: int | None = None):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        except ImportError:  # tensorboard is optional: the JSONL file has everything
            self.tb = None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_run(run_dir: Path, extra_runs: dict[str, Path] | None = None, out_dir: Path | None = None,
             label: str = "run") -> list[Path]:
    """loss.png (train and held-out loss) and lr.png from metrics.jsonl into `out_dir` (default RUN/plots);
    other runs (e.g. a decay branch) are drawn on the same axes. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {label: Path(run_dir), **(extra_runs or {})}
    out_dir = Path(out_dir) if out_dir else Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, ylabel, keys in (("loss", "loss", ("loss", "eval_loss")), ("lr", "learning rate", ("lr",))):
        fig, ax = plt.subplots(figsize=(7, 4))
        for label, rdir in runs.items():
            rows = read_metrics(rdir / "metrics.jsonl") if (rdir / "metrics.jsonl").exists() else []
            for key in keys:
                pts = [(r["step"], r[key]) for r in rows if key in r]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, "o-" if key == "eval_loss" else "-", ms=3,
                            label=f"{label} {key}" if len(runs) > 1 or len(keys) > 1 else key)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# Matmul shapes (m, k, n) for the CPU peak; the fastest is the peak. A single 1024³ product ran at about half
# the speed of these on a 2-core Sapphire Rapids VM (344 against 700–780 GFLOP/s in bf16). Each is 4–6 GFLOP.
_CPU_PEAK_SHAPES = ((2048, 512, 2048), (2048, 768, 2048), (2048, 1024, 1024))
_CPU_PEAK_SECONDS = 0.5  # per shape, after its first call: an emulated bf16 product takes seconds each


def peak_flops_per_device(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Dense peak for MFU in `dtype`: a table for known GPUs (bf16; fp32 at half); on a CPU, measured — the
    fastest of a few matmul shapes, each the fastest of up to `repeats` timings. The fastest, not the median:
    another process can only slow a timing down, so the best one is the closest to the machine's peak (a
    contended one still reads low, which is why `Throughput` withholds an MFU above 100 %)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in (("H200", 989e12), ("H100", 989e12), ("A100", 312e12), ("L40", 181e12),
                           ("A10", 125e12), ("4090", 165e12)):
            if key in name:
                return flops if dtype == torch.bfloat16 else flops / 2
        return 100e12
    best = 0.0
    for m, k, n in _CPU_PEAK_SHAPES:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b  # first call: allocation and the library's one-time setup
        start = time.perf_counter()
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - t0))
            if time.perf_counter() - start > _CPU_PEAK_SECONDS:
                break
    return best
