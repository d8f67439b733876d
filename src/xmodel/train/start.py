"""Where a run starts: fresh, resumed from its own newest checkpoint, a decay branch from a stable one, or the
weights of a released model (`init_from`) with a fresh optimizer.

    state = resolve_start(Start(resume="auto"), run_dir, built, train, plan)

Resuming restores model, optimizer, RNG and the `TrainState`, then checks the state against the config (see
`state.check_resume`). A decay branch loads model and optimizer from a stable checkpoint and starts its own
state: the same step and token count, the sampler at position 0 of the decay mixture, and the schedule's decay
starting at the branch point; a branch may switch optimizer (train.optimizer differs from the checkpoint's),
then only the model is loaded and the new optimizer starts fresh. `init_from` loads a model folder's weights into the freshly built model (the
model config must already be that folder's, see `init_from.init_model_config`) and starts at step 0; once the
run has a checkpoint, `--resume auto` continues it rather than initialising again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import XmodelError
from . import checkpoint as ckpt
from .batching import BatchPlan
from .build import Built
from .config import TrainConfig
from .state import TrainState, check_resume, plan_record, schedule_for


@dataclass(frozen=True)
class Start:
    resume: str = "auto"                 # auto (newest valid checkpoint of the run), none, or a checkpoint path
    stage: str = "stable"                # stable / decay: the mixture the data source draws
    branch_from: Path | None = None      # a decay branch's stable checkpoint
    allow_config_change: bool = False    # resume even if schedule, batch plan or seed differ (recorded)
    init_from: Path | None = None        # a model folder whose weights a fresh run starts from


def fresh_state(train: TrainConfig, plan: BatchPlan, stage: str = "stable", **fields) -> TrainState:
    branch_start = fields.get("branch_start", 0)
    return TrainState(stage=stage, schedule=schedule_for(train, stage, branch_start), batch=plan_record(plan),
                      seed=train.seed, optimizer=train.optimizer, **fields)


def _saved_state(path: Path) -> TrainState:
    return TrainState.from_dict(ckpt.read_trainer_state(path)["state"], where=str(path / "trainer_state.json"))


def _load(path: Path, built: Built, with_optimizers: bool = True) -> TrainState:
    saved = ckpt.load_checkpoint(path, built.model, built.optimizers if with_optimizers else None)
    return TrainState.from_dict(saved["state"], where=str(path / "trainer_state.json"))


def resolve_start(start: Start, run_dir: Path, built: Built, train: TrainConfig, plan: BatchPlan,
                  log=print) -> TrainState:
    if start.resume == "auto":
        resume_from = ckpt.latest_valid(run_dir, log=log, set_aside=built.env.is_main)
    elif start.resume == "none":
        resume_from = None
    else:
        resume_from = Path(start.resume)
        if not (resume_from / "MANIFEST.json").is_file():
            raise XmodelError(f"--resume {resume_from}: not a checkpoint directory (no MANIFEST.json)")
    if resume_from is not None:
        check_resume(_saved_state(resume_from), train, plan, start.stage, where=str(resume_from),
                     allow_changes=True, log=lambda *_: None)  # refuse before loading anything
        state = check_resume(_load(resume_from, built), train, plan, start.stage, where=str(resume_from),
                             allow_changes=start.allow_config_change, log=log)
        if start.branch_from is not None and state.branch_from != str(start.branch_from):
            raise XmodelError(f"{resume_from}: this run branched from {state.branch_from}, not --from "
                              f"{start.branch_from}")
        if start.init_from is not None and state.init_from != str(start.init_from):
            raise XmodelError(f"{resume_from}: this run started from {state.init_from or 'a fresh model'}, not "
                              f"--init-from {start.init_from}")
        log(f"resumed from {resume_from} at step {state.step}")
        return state
    if start.branch_from is not None:
        switch = _saved_state(start.branch_from).optimizer != train.optimizer
        stable = _load(start.branch_from, built, with_optimizers=not switch)
        if stable.stage != "stable":
            raise XmodelError(f"{start.branch_from}: a decay branch starts from a stable-stage checkpoint")
        log(f"decay branch from {start.branch_from} (step {stable.step})"
            + (f"; optimizer switched {stable.optimizer} -> {train.optimizer}, its state fresh" if switch else ""))
        return fresh_state(train, plan, "decay", step=stable.step, tokens=stable.tokens,
                           branch_from=str(start.branch_from), branch_start=stable.step)
    if start.init_from is not None:
        from .init_from import load_init_weights

        load_init_weights(built, start.init_from)
        log(f"initialised from {start.init_from} with a fresh optimizer ({start.stage} stage from step 0)")
        return fresh_state(train, plan, start.stage, init_from=str(start.init_from))
    if start.stage == "decay":
        raise XmodelError("--stage decay needs --from RUN/checkpoints/step_N (a stable checkpoint to branch from) "
                          "or --init-from MODEL_DIR (a released model's weights)")
    return fresh_state(train, plan)


def last_step(state: TrainState, train: TrainConfig) -> int:
    """The step a stage ends at: `max_steps` for the stable stage, `max_steps` after the branch for a decay."""
    return state.branch_start + train.max_steps if state.stage == "decay" else train.max_steps
