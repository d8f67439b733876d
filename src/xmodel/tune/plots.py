"""PNG figures of a study (Optuna's matplotlib visualisations): optimisation history, parameter importances
(fANOVA), pairwise contours and slices of the objective over the parameters (the view of the Xmodel-2
report's Figure 6). Each figure is written to a temporary name and renamed."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import optuna


def _agg():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return path


def _figure_of(axes):
    return np.atleast_1d(np.asarray(axes, dtype=object)).flat[0].figure


def study_plots(study: optuna.Study, out_dir: Path, params: list[str] | None = None, log=print) -> list[Path]:
    """history.png, importances.png, contour.png, slice.png under out_dir (those the trials allow)."""
    plt = _agg()
    from optuna.visualization import matplotlib as ovm

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    written = []
    figures = [("history", lambda: ovm.plot_optimization_history(study), 1),
               ("importances", lambda: ovm.plot_param_importances(study, params=params), 3),
               ("contour", lambda: ovm.plot_contour(study, params=params), 2),
               ("slice", lambda: ovm.plot_slice(study, params=params), 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, draw, needs in figures:
            if len(complete) < needs:
                log(f"{name}.png: needs {needs} complete trials, the study has {len(complete)}")
                continue
            try:
                axes = draw()
            except Exception as e:  # e.g. importances when every trial has the same value
                log(f"{name}.png: not drawn ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
                plt.close("all")
                continue
            fig = _figure_of(axes)
            if name == "contour":
                fig.set_size_inches(12, 11)
            elif name == "slice":
                fig.set_size_inches(4 * max(1, len(params or study.best_trial.params)), 4)
            fig.suptitle(f"{study.study_name}: {name}", y=1.0)
            written.append(save_figure(fig, out_dir / f"{name}.png"))
            plt.close(fig)
    return written
