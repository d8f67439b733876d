"""Optuna studies that survive crashes and are shared by worker processes (or machines).

    study = open_study("sqlite:///runs/tune/study.db", "mup-nano", cfg.tune.study, settings={...})
    run_worker(study, objective, cfg.tune.study, worker=0)

* Storage is any SQL database URL Optuna takes (SQLite for one machine, PostgreSQL/MySQL for several); a
  plain file path means SQLite. Every trial is written as it starts and ends, so nothing finished is lost.
* Workers heart-beat. A trial whose worker died (SIGKILL, a lost machine) is marked failed once its heart has
  not beaten for `grace_period` seconds, and queued again with the same parameters (Optuna's
  RetryHeartbeatStaleTrialCallback); a worker stopped with Ctrl-C / SIGTERM queues its trial again itself.
* A trial that raises or returns NaN is recorded as failed with the reason, and the study goes on; a worker
  stops after `max_failures` failures in a row (a broken setup, not bad luck).
* `n_trials` is the number of finished (complete or pruned) trials of the study: a rerun continues to it,
  and workers do not start a trial when finished plus running trials already reach it.
* The settings that define the objective are stored with the study; reopening it with different ones is an
  error, so one study never mixes trials of different budgets or data.
"""

from __future__ import annotations

import json
import math
import signal
import time
import warnings
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from ..errors import XmodelError
from .config import StudyConfig

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def storage_url(spec: str) -> str:
    """An SQLAlchemy URL as given, or a file path turned into an SQLite URL."""
    if "://" in spec:
        return spec
    path = Path(spec).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def open_storage(url: str, cfg: StudyConfig) -> optuna.storages.RDBStorage:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=cfg.heartbeat_interval,
            grace_period=cfg.grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(cfg.max_retries))
    except Exception as e:  # bad URL, missing driver, unreachable server
        raise XmodelError(f"--storage {url}: {str(e).splitlines()[0]}") from None


def make_sampler(cfg: StudyConfig, worker: int = 0) -> optuna.samplers.BaseSampler:
    seed = cfg.seed + worker  # distinct per worker, or two workers would propose the same random start points
    if cfg.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.startup_trials)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cfg.startup_trials, multivariate=True,
                                      constant_liar=True)


def make_pruner(cfg: StudyConfig, eval_every: int = 1) -> optuna.pruners.BasePruner:
    """median: stop a trial whose held-out loss is worse than the median of earlier trials at the same step
    (after 5 finished trials); hyperband: successive halving over the evaluation steps; none. Trials report
    every `eval_every` steps, and their first `pruner_warmup_evals` reports never prune."""
    first_prunable = eval_every * cfg.pruner_warmup_evals + 1 if cfg.pruner_warmup_evals else 0
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=first_prunable)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, first_prunable))
    return optuna.pruners.NopPruner()


def open_study(storage: str, name: str, cfg: StudyConfig, settings: dict, worker: int = 0,
               eval_every: int = 1) -> optuna.Study:
    """Create or reopen a study; `settings` (what defines the objective) must match the stored ones."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = open_storage(storage_url(storage), cfg)
    study = optuna.create_study(storage=store, study_name=name, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(cfg, worker),
                                pruner=make_pruner(cfg, eval_every))
    stored = study.user_attrs.get("settings")
    wanted = json.loads(json.dumps(settings))
    if stored is None:
        study.set_user_attr("settings", wanted)
    elif stored != wanted:
        diff = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        raise XmodelError(f"study {name!r} in {storage} was run with other settings ({', '.join(diff)}: "
                          f"{stored.get(diff[0])!r} there, {wanted.get(diff[0])!r} now); use another --study-name")
    return study


def load_study(storage: str, name: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "://" not in storage and not Path(storage).expanduser().is_file():
        raise XmodelError(f"--storage {storage}: no such study database (reading never creates one)")
    if storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file():
        raise XmodelError(f"--storage {storage}: no such study database (reading never creates one)")
    try:
        return optuna.load_study(study_name=name, storage=storage_url(storage))
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage_url(storage))]
        raise XmodelError(f"--study-name {name}: no such study in {storage} (have: {', '.join(names) or 'none'})") \
            from None


def counts(study: optuna.Study) -> dict[str, int]:
    out = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name.lower()] += 1
    return out


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a scheduler's preemption) is handled like Ctrl-C


def run_worker(study: optuna.Study, objective: Callable[[optuna.Trial], float], cfg: StudyConfig, *,
               worker: int = 0, log=print,
               describe: Callable[[optuna.trial.FrozenTrial], str] | None = None) -> dict[str, int]:
    """Run trials until the study has `cfg.n_trials` finished ones. Returns the final state counts."""
    failures_in_a_row = 0
    current: dict = {}

    def tracked(trial: optuna.Trial) -> float:
        current["number"] = trial.number
        current["start"] = time.perf_counter()
        trial.set_user_attr("worker", worker)
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", "interrupted")
            raise
        except Exception as e:
            trial.set_user_attr("fail_reason", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            raise
        if value is None or not math.isfinite(value):
            trial.set_user_attr("fail_reason", trial.user_attrs.get("fail_reason", "non-finite objective"))
            return math.nan  # Optuna records a NaN objective as a failed trial
        return value

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            optuna.storages.fail_stale_trials(study)
            c = counts(study)
            finished = c["complete"] + c["pruned"]
            if finished >= cfg.n_trials:
                break
            if finished + c["running"] >= cfg.n_trials:
                time.sleep(min(5, cfg.heartbeat_interval))  # others are finishing; a dead one will be retried
                continue
            current.clear()
            try:
                study.optimize(tracked, n_trials=1, catch=(Exception,), gc_after_trial=True)
            except KeyboardInterrupt:
                _requeue_interrupted(study, current.get("number"), log)
                raise
            frozen = study.get_trials(deepcopy=False)[current["number"]] if "number" in current else None
            if frozen is None:
                continue
            seconds = time.perf_counter() - current["start"]
            frozen_best = _best_or_none(study)
            text = describe(frozen) if describe else str(frozen.params)
            if frozen.state == TrialState.FAIL:
                failures_in_a_row += 1
                log(f"trial {frozen.number} failed ({frozen.user_attrs.get('fail_reason', 'unknown')}) "
                    f"after {seconds:.0f}s: {text}")
                if failures_in_a_row >= cfg.max_failures:
                    raise XmodelError(f"{failures_in_a_row} trials in a row failed; last: "
                                      f"{frozen.user_attrs.get('fail_reason', 'unknown')}")
                continue
            failures_in_a_row = 0
            if frozen.state == TrialState.PRUNED:
                step = max(frozen.intermediate_values, default=0)
                state = f"pruned at step {step} ({frozen.intermediate_values.get(step, math.nan):.4f})"
            else:
                state = f"{frozen.value:.4f}"
            best = f" [best {frozen_best.value:.4f} #{frozen_best.number}]" if frozen_best else ""
            log(f"trial {frozen.number}: {state} in {seconds:.0f}s: {text}{best}")
    finally:
        signal.signal(signal.SIGTERM, previous)
    return counts(study)


def _best_or_none(study: optuna.Study):
    try:
        return study.best_trial
    except ValueError:
        return None


def _requeue_interrupted(study: optuna.Study, number: int | None, log) -> None:
    """Queue an interrupted trial again (same parameters), as the heartbeat does for a killed worker."""
    if number is None:
        return
    frozen = study.get_trials(deepcopy=False)[number]
    if frozen.state == TrialState.RUNNING:  # interrupted before Optuna could record it
        study.tell(number, state=TrialState.FAIL)
        frozen = study.get_trials(deepcopy=False)[number]
    if frozen.state == TrialState.FAIL:
        optuna.storages.RetryHeartbeatStaleTrialCallback()(study, frozen)
        log(f"trial {number} interrupted; queued again with the same parameters (rerun the command to resume)")


def write_yaml(path, doc: dict, header: str = "") -> None:
    """Write `doc` as YAML under a comment header, atomically (temporary name, then rename)."""
    from pathlib import Path

    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    tmp.replace(path)
