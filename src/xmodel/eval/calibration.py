"""Calibration on MMLU (Xmodel-2 Figure 4), from the four letter log-likelihoods of every question.

lm-eval scores the continuations " A" … " D"; a softmax over those four log-probabilities gives each option a
probability. Two reliability diagrams come from them, both with equal-width bins on [0, 1]:

* **per choice** – what Figure 4 draws ("confidence bins (log-probabilities) for A/B/C/D choices" against the
  accuracy within each bin): every option is one point, its probability against whether it is the correct
  option, so four points per question. A bin's "accuracy" is the share of its options that are correct;
* **top label** – the usual diagram: one point per question, the probability of the chosen (highest) letter
  against whether the question was answered correctly.

For each, ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b| (0 for perfect calibration).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .plots import pyplot, save_figure


@dataclass
class CalibrationResult:
    ece: float
    n: int                               # points: questions (top label) or options (per choice)
    accuracy: float
    mean_confidence: float
    bin_edges: list[float]
    bin_count: list[int]
    bin_accuracy: list[float | None]
    bin_confidence: list[float | None]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MMLUCalibration:
    """Both diagrams of one run: `per_choice` (Figure 4, 4 points per question) and `top_label`."""

    questions: int
    per_choice: CalibrationResult
    top_label: CalibrationResult

    def to_dict(self) -> dict:
        return {"questions": self.questions, "per_choice": self.per_choice.to_dict(),
                "top_label": self.top_label.to_dict()}


def choice_probabilities(samples: dict[str, list[dict]]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, gold): one row of option probabilities (softmax over the options' log-likelihoods) per
    multiple-choice sample, and its gold index.

    `samples` is lm-eval's ``samples`` output (task → per-document records): each record's ``filtered_resps``
    holds one (loglikelihood, is_greedy) pair per choice and ``target`` the gold index.
    """
    rows, gold = [], []
    for records in samples.values():
        for rec in records:
            lls = np.array([float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in rec["filtered_resps"]])
            probs = np.exp(lls - lls.max())
            rows.append(probs / probs.sum())
            gold.append(int(rec["target"]))
    widths = {len(r) for r in rows}
    if len(widths) > 1:  # MMLU always has four options; anything else keeps a ragged list of rows
        return np.array(rows, dtype=object), np.array(gold)
    return np.array(rows, dtype=float).reshape(len(rows), -1), np.array(gold)


def choice_confidences(samples: dict[str, list[dict]]) -> tuple[np.ndarray, np.ndarray]:
    """Top label: (probability of the chosen choice, whether it is the gold one) for every sample."""
    probs, gold = choice_probabilities(samples)
    chosen = [int(np.argmax(p)) for p in probs]
    return np.array([float(p[c]) for p, c in zip(probs, chosen)]), np.array(
        [c == g for c, g in zip(chosen, gold)], dtype=bool)


def per_choice_points(probs, gold) -> tuple[np.ndarray, np.ndarray]:
    """Per choice: every option's probability and whether it is the correct option (k points per question)."""
    conf = np.concatenate([np.asarray(p, dtype=float) for p in probs]) if len(probs) else np.array([])
    correct = np.concatenate([np.arange(len(p)) == g for p, g in zip(probs, gold)]) if len(probs) else np.array([])
    return conf, correct.astype(bool)


def calibration(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> CalibrationResult:
    """Equal-width confidence bins on [0, 1]: bin b holds (edge_b, edge_b+1], the first bin also 0."""
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


def mmlu_calibration(samples: dict[str, list[dict]], n_bins: int = 10) -> MMLUCalibration:
    """Both diagrams from lm-eval's MMLU samples (see the module docstring)."""
    probs, gold = choice_probabilities(samples)
    top = calibration(*choice_confidences(samples), n_bins=n_bins)
    per_choice = calibration(*per_choice_points(probs, gold), n_bins=n_bins)
    return MMLUCalibration(questions=len(gold), per_choice=per_choice, top_label=top)


def _diagram(ax, ax_n, result: CalibrationResult, title: str, xlabel: str, ylabel: str, count_label: str):
    edges = np.array(result.bin_edges)
    width = np.diff(edges)
    acc = np.array([a if a is not None else 0.0 for a in result.bin_accuracy])
    ax.bar(edges[:-1], acc, width=width, align="edge", edgecolor="black", color="#4C72B0", alpha=0.85,
           label="accuracy in bin")
    ax.plot([0, 1], [0, 1], linestyle=":", color="black", label="perfect calibration")
    points = [(c, a) for c, a in zip(result.bin_confidence, result.bin_accuracy) if c is not None]
    if points:
        ax.plot(*zip(*points), "o", color="#C44E52", markersize=4, label="(mean confidence, accuracy)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.set_title(f"{title}\nECE = {result.ece:.4f}  (n = {result.n})", fontsize=10)
    ax.legend(loc="upper left", fontsize=7)
    ax_n.bar(edges[:-1], result.bin_count, width=width, align="edge", edgecolor="black", color="#999999")
    ax_n.set_xlabel(xlabel, fontsize=8)
    ax_n.set_ylabel(count_label)
    ax_n.set_xlim(0, 1)


def reliability_diagram(result: MMLUCalibration | CalibrationResult, path: Path,
                        title: str = "MMLU calibration") -> Path:
    """Accuracy per confidence bin (bars) against the diagonal of perfect calibration, with the counts below;
    for an `MMLUCalibration`, Figure 4's per-choice diagram beside the top-label one. PNG written atomically."""
    plt = pyplot()
    if isinstance(result, CalibrationResult):
        fig, (ax, ax_n) = plt.subplots(2, 1, figsize=(5.2, 6.2), sharex=True,
                                       gridspec_kw={"height_ratios": [3, 1]})
        _diagram(ax, ax_n, result, title, "confidence of the chosen letter (softmax over A–D log-probs)",
                 "accuracy", "questions")
    else:
        fig, axes = plt.subplots(2, 2, figsize=(10.4, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        _diagram(axes[0][0], axes[1][0], result.per_choice, f"{title}: every A/B/C/D option (Figure 4)",
                 "probability of the option (softmax over A–D log-probs)", "share of options that are correct",
                 "options")
        _diagram(axes[0][1], axes[1][1], result.top_label, f"{title}: chosen letter (top label)",
                 "probability of the chosen letter", "accuracy", "questions")
        fig.suptitle(f"{result.questions} questions", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
