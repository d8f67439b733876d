"""The wind tunnel: tune on a nano model, transfer to 1.2B (Xmodel-2 appendix).

* `space` – the μP search space of Table 5 and the size of its grid;
* `study` – Optuna studies in SQL storage: samplers, pruning, crash recovery, worker processes;
* `data` – what trials train and evaluate on (the prepared corpora, or a synthetic stand-in);
* `widths` – one model shape at many widths, under μP or standard parametrisation;
* `mup`, `coord`, `transfer`, `mixture` – the four experiments; `plots` – their figures.
"""
