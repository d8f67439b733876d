"""Calibration on MMLU (Xmodel-2 Figure 4): how well the confidence of the chosen letter predicts correctness.

For every question the model scores the four continuations " A" … " D" (lm-eval's loglikelihoods); softmax
over those four log-probabilities gives the confidence of the chosen (highest) letter. Questions are binned by
confidence; each bin's accuracy against its mean confidence is the reliability diagram, and

    ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|

is the expected calibration error (0 for a perfectly calibrated model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .plots import pyplot, save_figure


@dataclass
class CalibrationResult:
    ece: float
    n: int
    accuracy: float
    mean_confidence: float
    bin_edges: list[float]
    bin_count: list[int]
    bin_accuracy: list[float | None]
    bin_confidence: list[float | None]

    def to_dict(self) -> dict:
        return asdict(self)


def choice_confidences(samples: dict[str, list[dict]]) -> tuple[np.ndarray, np.ndarray]:
    """(confidence of the chosen choice, whether it is the gold one) for every multiple-choice sample.

    `samples` is lm-eval's ``samples`` output (task → per-document records): each record's ``filtered_resps``
    holds one (loglikelihood, is_greedy) pair per choice and ``target`` the gold index.
    """
    conf, correct = [], []
    for records in samples.values():
        for rec in records:
            lls = np.array([float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in rec["filtered_resps"]])
            probs = np.exp(lls - lls.max())
            probs /= probs.sum()
            choice = int(np.argmax(lls))
            conf.append(float(probs[choice]))
            correct.append(choice == int(rec["target"]))
    return np.array(conf), np.array(correct, dtype=bool)


def calibration(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> CalibrationResult:
    """Equal-width confidence bins on [0, 1]; the last bin includes 1.0."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    if confidence.size == 0:
        raise ValueError("calibration: no predictions")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    counts, accs, confs = [], [], []
    ece = 0.0
    for b in range(n_bins):
        mask = idx == b
        n = int(mask.sum())
        counts.append(n)
        if n:
            acc, conf = float(correct[mask].mean()), float(confidence[mask].mean())
            ece += n / confidence.size * abs(acc - conf)
            accs.append(acc)
            confs.append(conf)
        else:
            accs.append(None)
            confs.append(None)
    return CalibrationResult(ece=float(ece), n=int(confidence.size), accuracy=float(correct.mean()),
                             mean_confidence=float(confidence.mean()), bin_edges=edges.tolist(), bin_count=counts,
                             bin_accuracy=accs, bin_confidence=confs)


def reliability_diagram(result: CalibrationResult, path: Path, title: str = "MMLU calibration") -> Path:
    """Accuracy per confidence bin (bars) against the diagonal of perfect calibration; PNG written atomically."""
    plt = pyplot()
    edges = np.array(result.bin_edges)
    width = np.diff(edges)
    acc = np.array([a if a is not None else 0.0 for a in result.bin_accuracy])
    fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5.2, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.bar(edges[:-1], acc, width=width, align="edge", edgecolor="black", color="#4C72B0", alpha=0.85,
           label="accuracy in bin")
    ax.plot([0, 1], [0, 1], linestyle=":", color="black", label="perfect calibration")
    points = [(c, a) for c, a in zip(result.bin_confidence, result.bin_accuracy) if c is not None]
    if points:
        ax.plot(*zip(*points), "o", color="#C44E52", markersize=4, label="(mean confidence, accuracy)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}\nECE = {result.ece:.4f}  (n = {result.n}, accuracy {result.accuracy:.3f})", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax_n.bar(edges[:-1], result.bin_count, width=width, align="edge", edgecolor="black", color="#999999")
    ax_n.set_xlabel("confidence of the chosen letter (softmax over A–D log-probs)")
    ax_n.set_ylabel("questions")
    ax_n.set_xlim(0, 1)
    fig.tight_layout()
    return save_figure(fig, path)

