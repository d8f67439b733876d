"""The trainer's state and its checks: `TrainState` through a checkpoint, resumes that would change the run
refused in one line (or allowed and recorded), a checkpoint that is data and never code, and a loop that reads
the device only on the steps it logs."""

import io
import json
import os
import pickle

import pytest
import torch

from xmodel.errors import XmodelError
from xmodel.train import checkpoint as ckpt
from xmodel.train.callbacks import Callback, MetricsWriter
from xmodel.train.start import Start
from xmodel.train.state import TrainState
from xmodel.train.trainer import train as train_model

from .train_helpers import PatternSource, tiny_train_config


def train(cfg, run_dir, **kwargs):
    return train_model(cfg.model, cfg.train, PatternSource(97, 32), run_dir, progress=False,
                       log=kwargs.pop("log", lambda *_: None), **kwargs)


@pytest.fixture
def run_of_six(tmp_path):
    cfg = tiny_train_config(6, **{"train.save_every": 3, "train.keep_last": 5})
    train(cfg, tmp_path / "run", run_record={"note": "six steps"})
    return cfg, tmp_path / "run"


def test_train_state_round_trips_through_a_checkpoint(run_of_six):
    cfg, run_dir = run_of_six
    (_, at3), (_, at6) = ckpt.list_checkpoints(run_dir)
    saved = json.loads((at6 / "trainer_state.json").read_text())
    state = TrainState.from_dict(saved["state"])
    assert state.to_dict() == saved["state"]
    assert (state.step, state.data_position, state.tokens, state.stage) == (6, 6 * 4, 6 * 4 * 32, "stable")
    assert state.schedule == cfg.train.schedule and state.seed == cfg.train.seed
    assert state.batch == {"seq_len": 32, "batch_tokens": 128, "batch_tokens_start": None, "batch_ramp_steps": 0,
                           "batch_ramp": "linear"}
    assert saved["config"] == {"note": "six steps"}
    assert TrainState.from_dict(json.loads((at3 / "trainer_state.json").read_text())["state"]).step == 3
    with pytest.raises(XmodelError, match="unknown train-state field 'bogus'"):
        TrainState.from_dict({**saved["state"], "bogus": 1})


@pytest.mark.parametrize("override, needle", [
    ({"train.schedule.max_lr": 0.02}, "resuming with schedule.max_lr 0.02 but the run was trained with 0.01"),
    ({"train.seed": 3}, "resuming with seed 3 but the run was trained with 0"),
    ({"train.batch_tokens": 256}, "resuming with batch.batch_tokens 256 but the run was trained with 128"),
])
def test_resume_that_changes_the_run_is_refused_in_one_line(run_of_six, override, needle):
    _, run_dir = run_of_six
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with pytest.raises(XmodelError) as err:
        train(tiny_train_config(8, **override), run_dir)
    message = str(err.value)
    assert needle in message and "--allow-config-change" in message and "\n" not in message
    assert before == {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}  # nothing touched


def test_resume_into_another_stage_is_refused(run_of_six):
    _, run_dir = run_of_six
    with pytest.raises(XmodelError, match="the checkpoint is of the stable stage, but --stage decay"):
        train(tiny_train_config(8), run_dir, start=Start(stage="decay"))


def test_allowed_change_is_recorded(run_of_six):
    _, run_dir = run_of_six
    log = []
    cfg = tiny_train_config(8, **{"train.schedule.max_lr": 0.02})
    result = train(cfg, run_dir, start=Start(allow_config_change=True), run_record={"note": "more"},
                   log=log.append)
    assert result.step == 8
    change = "step 6: schedule.max_lr 0.01 -> 0.02"
    assert any(change in line for line in log)
    assert json.loads((run_dir / "config.json").read_text())["changes"] == [change]
    state = json.loads((result.last_checkpoint / "trainer_state.json").read_text())["state"]
    assert state["changes"] == [change] and state["schedule"]["max_lr"] == 0.02
    # The next resume with the same values needs no flag.
    assert train(tiny_train_config(9, **{"train.schedule.max_lr": 0.02}), run_dir).step == 9


def test_every_checkpoint_invalid_is_refused_without_resume_none(run_of_six):
    cfg, run_dir = run_of_six
    for _, path in ckpt.list_checkpoints(run_dir):
        (path / "MANIFEST.json").unlink()
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    with pytest.raises(XmodelError, match="every checkpoint is invalid .* --resume none"):
        train(cfg, run_dir)
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics
    assert train(cfg, run_dir, start=Start(resume="none")).step == 6


class _Payload:
    """Unpickling this runs a shell command that leaves a marker file (what an attacker's file would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _reseal(path):
    """What anyone who copies a checkpoint can do: rebuild its manifest after editing files."""
    (path / "MANIFEST.json").unlink()
    ckpt.write_manifest(path)
    assert ckpt.verify(path) is None


def _plant_in_dcp_bytes(state_dir, marker):
    """Point one of DCP's pickled values (an optimizer hyper-parameter) at a payload appended to its file."""
    meta_file = state_dir / ".metadata"
    metadata = pickle.loads(meta_file.read_bytes())  # trusted here: the test is the attacker
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    fqn = next(k for k, v in metadata.state_dict_metadata.items() if isinstance(v, BytesStorageMetadata))
    index = next(i for i in metadata.storage_data if i.fqn == fqn)
    info = metadata.storage_data[index]
    payload = io.BytesIO()
    torch.save(_Payload(marker), payload)
    data_file = state_dir / info.relative_path
    offset = data_file.stat().st_size
    with open(data_file, "ab") as f:
        f.write(payload.getvalue())
    info.offset, info.length = offset, len(payload.getvalue())
    meta_file.write_bytes(pickle.dumps(metadata))


@pytest.mark.parametrize("target", ["metadata", "dcp_value", "rng_pt", "rng_json"])
def test_a_planted_payload_never_runs(run_of_six, tmp_path, target):
    cfg, run_dir = run_of_six
    newest = ckpt.list_checkpoints(run_dir)[-1][1]
    marker = tmp_path / f"pwned-{target}"
    if target == "metadata":
        (newest / "state" / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    elif target == "dcp_value":
        _plant_in_dcp_bytes(newest / "state", marker)
    elif target == "rng_pt":  # the file name earlier versions read with torch.load(weights_only=False)
        torch.save(_Payload(marker), newest / "rng" / "rank_0.pt")
    else:
        (newest / "rng" / "rank_0.json").write_text('{"format": "xmodel-rng/1", "python": "oops"}')
    _reseal(newest)
    for i, start in enumerate((Start(resume=str(newest)), Start(stage="decay", branch_from=newest))):
        try:
            train(tiny_train_config(8), tmp_path / f"next{i}", start=start)
        except XmodelError as e:
            assert "\n" not in str(e) and str(newest) in str(e)
        assert not marker.exists()


class SyncCounter(Callback):
    """Counts reads of tensor values on the host (item, tolist, float(), int(), bool()) made by the loop's
    thread, per step."""

    READS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__float__, torch.Tensor.__int__,
             torch.Tensor.__bool__}

    def __init__(self):
        counter = self

        class Mode(torch.overrides.TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                if func in SyncCounter.READS:
                    counter.reads += 1
                return func(*args, **(kwargs or {}))

        self.mode, self.reads, self.per_step = Mode(), 0, {}

    def on_start(self, run):
        self.mode.__enter__()
        self.reads = 0

    def on_step(self, run, record):
        self.per_step[run.state.step] = self.reads
        self.reads = 0

    def close(self, run):
        self.mode.__exit__(None, None, None)


def test_the_loop_reads_the_device_once_per_logged_step_and_never_otherwise(tmp_path):
    """On CPU nothing truly waits, so this counts the reads that would wait for a GPU."""
    counter = SyncCounter()
    cfg = tiny_train_config(8, **{"train.log_every": 4})
    train(cfg, tmp_path / "run", callbacks=[counter, MetricsWriter()])
    assert counter.per_step == {1: 1, 2: 0, 3: 0, 4: 1, 5: 0, 6: 0, 7: 0, 8: 1}  # the first, every 4th, the last
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 4, 8] and all("loss" in r and "grad_norm" in r for r in rows)


def test_data_position_follows_the_batch_ramp(tmp_path):
    cfg = tiny_train_config(6, **{"train.batch_tokens": 8 * 32, "train.batch_tokens_start": 2 * 32,
                                  "train.batch_ramp_steps": 4, "train.save_every": 100})
    result = train(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    sizes = [r["batch_sequences"] for r in rows if "loss" in r]
    assert sizes == [2, 2, 4, 6, 8, 8]
    state = json.loads((result.last_checkpoint / "trainer_state.json").read_text())["state"]
    assert state["data_position"] == sum(sizes) and state["tokens"] == sum(sizes) * 32
