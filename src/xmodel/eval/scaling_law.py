"""Post-training scaling law (Xmodel-2 Figure 5): next-token loss as a function of how many tokens of context
the model has seen, on the WikiText-2 test set, fitted with

    L(t) = b + (t / c) ** a        (the report: a ≈ −0.575, b ≈ 1.772, c ≈ 32.840)

The test text is tokenized as one stream and cut into consecutive windows of `context_length` tokens; the loss
of predicting token t+1 from the t tokens before it is averaged over windows, for t = 1 … context_length − 1.
The fit uses SciPy's `curve_fit` (least squares, log c as the free parameter so c stays positive); the
uncertainties are the square roots of the covariance's diagonal (c's by the delta method) and R² is measured
on the fitted points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import XmodelError
from .plots import pyplot, save_figure

REPORT_FIT = {"a": -0.575, "b": 1.772, "c": 32.840}
WIKITEXT2_TEST = "eval/wikitext-2/wiki.test.raw"


@dataclass
class PowerLawFit:
    a: float
    b: float
    c: float
    a_err: float
    b_err: float
    c_err: float
    r2: float
    n_points: int

    def predict(self, t) -> np.ndarray:
        return power_law(np.asarray(t, dtype=float), self.a, self.b, self.c)

    def to_dict(self) -> dict:
        return asdict(self)


def power_law(t, a, b, c):
    return b + (t / c) ** a


def fit_power_law(t, loss, t_min: int = 1) -> PowerLawFit:
    """Least-squares fit of L(t) = b + (t/c)^a to (t, loss) for t ≥ t_min."""
    from scipy.optimize import curve_fit

    t = np.asarray(t, dtype=float)
    loss = np.asarray(loss, dtype=float)
    keep = (t >= t_min) & np.isfinite(loss)
    t, loss = t[keep], loss[keep]
    if t.size < 4:
        raise XmodelError(f"scaling-law fit: {t.size} points, need at least 4 (use a longer --context-length)")

    def model(tt, a, b, log_c):
        return power_law(tt, a, b, np.exp(log_c))

    # Start from the asymptote just below the last losses and the slope of the early decay in log-log space.
    b0 = float(loss[-max(1, t.size // 10):].mean()) * 0.9
    head = np.clip(loss[: max(4, t.size // 4)] - b0, 1e-6, None)
    a0 = float(np.clip(np.polyfit(np.log(t[: head.size]), np.log(head), 1)[0], -4.0, -0.01))
    log_c0 = float(np.log(t[0]) - np.log(head[0]) / a0)
    try:
        params, cov = curve_fit(model, t, loss, p0=(a0, b0, log_c0),
                                bounds=([-10.0, -np.inf, -50.0], [-1e-4, np.inf, 50.0]), maxfev=20000)
    except (RuntimeError, ValueError) as e:
        raise XmodelError(f"scaling-law fit did not converge: {e}") from None
    a, b, log_c = params
    errs = np.sqrt(np.clip(np.diag(cov), 0, None)) if np.all(np.isfinite(cov)) else np.full(3, np.nan)
    c = float(np.exp(log_c))
    resid = loss - model(t, *params)
    r2 = 1.0 - float(np.sum(resid ** 2) / np.sum((loss - loss.mean()) ** 2))
    return PowerLawFit(a=float(a), b=float(b), c=c, a_err=float(errs[0]), b_err=float(errs[1]),
                       c_err=float(c * errs[2]), r2=r2, n_points=int(t.size))


@torch.inference_mode()
def loss_by_position(model, tokenizer, text: str, context_length: int, max_windows: int | None = None,
                     device: str | torch.device = "cpu", progress: bool = True) -> tuple[np.ndarray, int]:
    """Mean next-token loss at each context size t = 1 … context_length−1, and the number of windows used."""
    from tqdm import tqdm

    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n_windows = len(ids) // context_length
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows < 1:
        raise XmodelError(f"scaling law: the text has {len(ids)} tokens, fewer than one window of "
                          f"{context_length}")
    totals = torch.zeros(context_length - 1, dtype=torch.float64)
    was_training = model.training
    model.eval()
    try:
        for w in tqdm(range(n_windows), desc="wikitext-2 windows", disable=not progress):
            window = torch.tensor(ids[w * context_length:(w + 1) * context_length], device=device)[None]
            logits = model(input_ids=window, use_cache=False).logits[0, :-1].float()
            losses = F.cross_entropy(logits, window[0, 1:], reduction="none")
            totals += losses.double().cpu()
    finally:
        model.train(was_training)
    return (totals / n_windows).numpy(), n_windows


def plot_scaling_law(t: np.ndarray, loss: np.ndarray, fit: PowerLawFit, path: Path, title: str) -> Path:
    """Loss per context position (log-scaled t), our fit, and the report's fitted curve for comparison."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.plot(t, loss, ".", markersize=2, color="#4C72B0", alpha=0.6, label="mean loss at position t")
    ax.plot(t, fit.predict(t), color="#C44E52", linewidth=2,
            label=f"fit: {fit.b:.3f} + (t/{fit.c:.2f})^{fit.a:.3f}  (R² = {fit.r2:.4f})")
    ax.plot(t, power_law(t, **REPORT_FIT), "--", color="gray",
            label="Xmodel-2 report: 1.772 + (t/32.84)^-0.575")
    ax.set_xscale("log")
    ax.set_xlabel("context tokens t")
    ax.set_ylabel("next-token loss (nats)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return save_figure(fig, path)


def run_scaling_law(model, tokenizer, data_root: Path, context_length: int, max_windows: int | None,
                    device, plot_path: Path | None = None, title: str = "WikiText-2 test") -> dict:
    """Measure, fit and (optionally) plot; returns the numbers the results JSON keeps."""
    path = data_root / WIKITEXT2_TEST
    if not path.is_file():
        raise XmodelError(f"{path}: WikiText-2 test file not found")
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and context_length > limit:
        raise XmodelError(f"--context-length {context_length}: the model's context is {limit} tokens")
    loss, n_windows = loss_by_position(model, tokenizer, path.read_text(encoding="utf-8"), context_length,
                                       max_windows, device)
    t = np.arange(1, context_length, dtype=float)
    fit = fit_power_law(t, loss)
    out = {"file": WIKITEXT2_TEST, "context_length": context_length, "windows": n_windows, "fit": fit.to_dict(),
           "report_fit": dict(REPORT_FIT), "loss_by_position": [round(float(x), 5) for x in loss]}
    if fit.r2 < 0.5:  # e.g. an untrained model, whose loss does not fall with more context
        out["warning"] = (f"poor fit (R² {fit.r2:.3f}): the loss barely depends on the context position, so "
                          "the parameters mean little")
    if plot_path is not None:
        plot_scaling_law(t, loss, fit, plot_path, f"{title}: {n_windows} windows × {context_length} tokens")
        out["plot"] = plot_path.name
    return out
