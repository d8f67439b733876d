"""What a training run carries from one step to the next, saved in every checkpoint and checked on resume.

`TrainState` is the whole of the loop's own state (model, optimizer and RNG are saved beside it). On resume
the checkpoint's state is compared with what the config asks for now: a different stage, schedule, batch plan
or seed would silently change the run, so it is refused with one line unless the caller allows it (then the
change is recorded in ``changes`` and kept in every later checkpoint).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..errors import XmodelError
from .batching import BatchPlan
from .config import TrainConfig
from .schedule import ScheduleConfig


def plan_record(plan: BatchPlan) -> dict:
    """The parts of a batch plan that fix which sequences each step trains on (not how they are split)."""
    return {"seq_len": plan.seq_len, "batch_tokens": plan.end_tokens, "batch_tokens_start": plan.start_tokens,
            "batch_ramp_steps": plan.ramp_steps, "batch_ramp": plan.ramp}


@dataclass
class TrainState:
    step: int = 0                 # optimizer steps taken (a decay branch counts on from its stable checkpoint)
    data_position: int = 0        # global sequence position of the next batch in the stage's sampler
    tokens: int = 0               # tokens trained on, this stage and every stage before it
    stage: str = "stable"         # "stable" or "decay": which mixture the sampler draws
    branch_from: str | None = None  # the stable checkpoint a decay branch started from
    branch_start: int = 0         # the step at which that branch started
    init_from: str | None = None  # a model folder whose weights a fresh run started from
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # as applied (a branch's decay_start set)
    batch: dict = field(default_factory=dict)  # `plan_record` of the run's batch plan
    seed: int = 0
    optimizer: str = "adamw"      # train.optimizer the state was made with (its optimizer state is of that kind)
    bad_steps_total: int = 0      # non-finite steps skipped so far
    changes: list[str] = field(default_factory=list)  # settings changed on an allowed resume, as logged

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "trainer_state.json") -> TrainState:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise XmodelError(f"{where}: unknown train-state field {unknown[0]!r} (written by a newer Xmodel?)")
        values = dict(data)
        values["schedule"] = ScheduleConfig(**values.get("schedule", {}))
        if values.get("batch"):  # written before the step ramp existed: those ramps were linear
            values["batch"] = {"batch_ramp": "linear", **values["batch"]}
        return cls(**values)


def schedule_for(train: TrainConfig, stage: str, branch_start: int) -> ScheduleConfig:
    """The schedule a stage runs: a decay branch decays from its start unless the config names a start. A
    decay stage that starts at step 0 from a released model's weights (fresh optimizer) decays after its
    warmup."""
    if stage == "decay" and train.schedule.decay_start is None:
        return dataclasses.replace(train.schedule, decay_start=max(branch_start, train.schedule.warmup_steps))
    return train.schedule


def check_resume(saved: TrainState, train: TrainConfig, plan: BatchPlan, stage: str, *, where: str,
                 allow_changes: bool, log=print) -> TrainState:
    """The saved state, after checking it against the config and stage asked for now.

    A mismatch is an `XmodelError` naming the setting, the checkpoint's value and the new one, unless
    `allow_changes`: then the new values are taken and each change is appended to ``changes``."""
    if saved.optimizer != train.optimizer:
        raise XmodelError(f"{where}: the checkpoint was trained with {saved.optimizer}, not train.optimizer "
                          f"{train.optimizer}; its optimizer state cannot be resumed by another optimizer (switch "
                          f"at a decay branch: --stage decay --from CHECKPOINT)")
    if saved.stage != stage:
        raise XmodelError(f"{where}: the checkpoint is of the {saved.stage} stage, but --stage {stage} was asked "
                          f"for (a decay branch starts from a stable checkpoint with --from, in its own run folder)")
    wanted = {"schedule": dataclasses.asdict(schedule_for(train, stage, saved.branch_start)),
              "batch": plan_record(plan), "seed": train.seed}
    have = {"schedule": dataclasses.asdict(saved.schedule), "batch": saved.batch, "seed": saved.seed}
    diffs = []
    for section, new in wanted.items():
        old = have[section]
        if isinstance(new, dict):
            diffs += [(f"{section}.{k}", old.get(k), v) for k, v in new.items() if old.get(k) != v]
        elif old != new:
            diffs.append((section, old, new))
    if not diffs:
        return saved
    if not allow_changes:
        name, old, new = diffs[0]
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise XmodelError(f"{where}: resuming with {name} {new!r} but the run was trained with {old!r}{more}; "
                          f"pass --allow-config-change to continue with the new value")
    changes = [f"step {saved.step}: {name} {old!r} -> {new!r}" for name, old, new in diffs]
    for line in changes:
        log(f"config changed on resume: {line}")
    return dataclasses.replace(saved, schedule=ScheduleConfig(**wanted["schedule"]), batch=wanted["batch"],
                               seed=train.seed, changes=[*saved.changes, *changes])
