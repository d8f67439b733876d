"""The wind tunnel: μP study with SQL storage (interrupted by SIGKILL and resumed), failed/NaN trials, pruning,
worker processes, coordinate check, μTransfer and the decay-mixture search — on the prepared real data of the
session fixture `prepared` (tests/data_helpers.py), at tiny budgets."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from xmodel.cli.main import main
from xmodel.config import load_config
from xmodel.tune.space import MUP_SPACE, grid_points, grid_size, grid_statement
from xmodel.tune.study import make_pruner, open_study, run_worker

REPO = Path(__file__).resolve().parent.parent

# A 2-layer, 64-wide model, 4 × 256-token sequences per step: a trial is a few seconds on one thread.
TINY_MODEL = ["--model.hidden_size", "64", "--model.intermediate_size", "160", "--model.num_hidden_layers", "2",
              "--model.num_attention_heads", "2", "--model.num_key_value_heads", "1"]
TINY_TRAIN = ["--train.micro_batch_size", "4", "--train.batch_tokens", "1024", "--train.eval_sequences", "8",
              "--train.precision", "fp32", "--train.peak_flops", "1e11"]


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models on a shared CPU: one thread avoids oversubscription (several times faster here).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tune_cmd(*args):
    return [sys.executable, "-m", "xmodel.cli.main", "tune", *map(str, args)]


def env1():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def trials(db: Path, name: str):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials(deepcopy=False)


# ---- search space ------------------------------------------------------------------------------------------

def test_grid_of_table5():
    assert [grid_points(d) for d in MUP_SPACE.values()] == [19, 6, 41, 100]
    assert grid_size(MUP_SPACE) == 467_400
    line = grid_statement()
    assert "19 × 6 × 41 × 100 = 467,400" in line and "570,000" in line


# ---- study machinery: failures, NaN, pruning, settings ------------------------------------------------------

def test_failed_and_nan_trials_are_recorded_and_the_study_goes_on(tmp_path):
    cfg = load_config("nano", overrides={"tune.study.n_trials": 4, "tune.study.sampler": "tpe",
                                         "tune.study.startup_trials": 2}).tune.study
    study = open_study(str(tmp_path / "s.db"), "s", cfg, {"experiment": "test"})

    def objective(trial):
        x = trial.suggest_float("x", -1, 1)
        if trial.number == 1:
            raise RuntimeError("out of memory (simulated)")
        if trial.number == 2:
            return math.nan
        return x * x

    counts = run_worker(study, objective, cfg, log=lambda *_: None)
    assert counts["complete"] == 4 and counts["fail"] == 2
    states = {t.number: t for t in trials(tmp_path / "s.db", "s")}
    assert states[1].state == TrialState.FAIL and "out of memory" in states[1].user_attrs["fail_reason"]
    assert states[2].state == TrialState.FAIL and "non-finite" in states[2].user_attrs["fail_reason"]


def test_ctrl_c_queues_the_running_trial_again(tmp_path):
    cfg = load_config("nano", overrides={"tune.study.n_trials": 3, "tune.study.sampler": "tpe"}).tune.study
    study = open_study(str(tmp_path / "s.db"), "s", cfg, {"experiment": "test"})
    interrupt = {"at": 1}

    def objective(trial):
        x = trial.suggest_float("x", -1, 1)
        if trial.number == interrupt["at"]:
            raise KeyboardInterrupt
        return x * x

    with pytest.raises(KeyboardInterrupt):
        run_worker(study, objective, cfg, log=lambda *_: None)
    ts = trials(tmp_path / "s.db", "s")
    assert ts[1].state == TrialState.FAIL and ts[1].user_attrs["fail_reason"] == "interrupted"
    assert ts[2].state == TrialState.WAITING and ts[2].params == ts[1].params
    interrupt["at"] = None
    assert run_worker(study, objective, cfg, log=lambda *_: None)["complete"] == 3
    ts = trials(tmp_path / "s.db", "s")
    assert ts[2].state == TrialState.COMPLETE and ts[2].params == ts[1].params and len(ts) == 4


def test_a_worker_stops_after_failures_in_a_row(tmp_path):
    cfg = load_config("nano", overrides={"tune.study.max_failures": 2}).tune.study
    study = open_study(str(tmp_path / "s.db"), "s", cfg, {"experiment": "test"})
    from xmodel.errors import XmodelError

    def objective(trial):
        trial.suggest_float("x", 0, 1)
        raise ValueError("broken setup")

    with pytest.raises(XmodelError, match="2 trials in a row failed; last: ValueError: broken setup"):
        run_worker(study, objective, cfg, log=lambda *_: None)


def test_median_pruner_stops_a_hopeless_trial(tmp_path):
    cfg = load_config("nano", overrides={"tune.study.pruner": "median"}).tune.study
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'p.db'}", pruner=make_pruner(cfg, eval_every=1))
    for value in (1.0, 1.1, 0.9, 1.2, 1.0):
        t = study.ask()
        for step in (1, 2, 3):
            t.report(value, step)
        study.tell(t, value)
    hopeless = study.ask()
    hopeless.report(5.0, 1)
    assert not hopeless.should_prune()  # warmup: the first evaluation never prunes
    hopeless.report(5.0, 2)
    assert hopeless.should_prune()


def test_reopening_a_study_with_other_settings_is_refused(tmp_path):
    from xmodel.errors import XmodelError

    cfg = load_config("nano").tune.study
    open_study(str(tmp_path / "s.db"), "s", cfg, {"experiment": "mup", "steps": 10})
    open_study(str(tmp_path / "s.db"), "s", cfg, {"experiment": "mup", "steps": 10})  # same: fine
    with pytest.raises(XmodelError, match=r"steps: 10 there, 20 now"):
        open_study(str(tmp_path / "s.db"), "s", cfg, {"experiment": "mup", "steps": 20})


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["tune", "mup", "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err
    assert main(["tune", "mup", "--data", "synthetic", "--storage", "nosuchdb://x", "--output",
                 str(tmp_path)]) == 2
    assert "--storage nosuchdb://x" in capsys.readouterr().err
    assert main(["tune", "transfer", "--data", "synthetic", "--tune.transfer.widths", "[64, 128]"]) == 2
    assert "tune.transfer.widths: need at least 4" in capsys.readouterr().err


# ---- the μP study on real data -----------------------------------------------------------------------------

def mup_command(prepared, out, n_trials, *extra):
    return tune_cmd("mup", "--data", prepared, "--output", out, "--n-trials", n_trials, "--sampler", "tpe",
                    "--threads", 1, "--tune.study.startup_trials", 3, "--tune.study.heartbeat_interval", 1,
                    "--tune.study.grace_period", 2, "--tune.mup.tokens", 12 * 1024, "--tune.mup.evals", 3,
                    *TINY_MODEL, *TINY_TRAIN, *extra)


@pytest.mark.slow
def test_mup_study_survives_sigkill_and_resumes(prepared, tokenizer_dir, tmp_path):
    out = tmp_path / "mup"
    db = out / "study.db"
    # Trials of 24K tokens (a few seconds each even on an idle machine) leave time to catch one running.
    longer = ("--tune.mup.tokens", 24 * 1024)
    stderr = tmp_path / "first.err"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(mup_command(prepared.path, out, 6, *longer), cwd=REPO, env=env1(),
                                stdout=subprocess.DEVNULL, stderr=err)
    deadline, killed_trial = time.time() + 600, None
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                ts = trials(db, "mup")
            except Exception:  # the study is being created
                ts = []
            done = [t for t in ts if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            # Kill only once the running trial has drawn its parameters: its retry must repeat them. (A trial
            # killed between its creation and its first suggestion has none, and its retry draws afresh.)
            running = [t for t in ts if t.state == TrialState.RUNNING and len(t.params) == len(MUP_SPACE)]
            if len(done) >= 2 and running:
                proc.send_signal(signal.SIGKILL)
                killed_trial = running[0].number
                break
        time.sleep(0.05)
    proc.wait()
    assert killed_trial is not None, ("the study finished (or hung) before it could be interrupted; exit "
                                      f"{proc.returncode}: {stderr.read_text()[-2000:]}")
    before = {t.number: (t.state, t.value, t.params) for t in trials(db, "mup")}
    assert before[killed_trial][0] == TrialState.RUNNING  # the killed worker left it running

    time.sleep(2.5)  # past the grace period: the dead worker's trial is stale
    res = subprocess.run(mup_command(prepared.path, out, 6, *longer), cwd=REPO, env=env1(), capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    after = trials(db, "mup")
    finished = [t for t in after if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6  # exactly the budget: nothing lost, nothing run twice
    for number, (state, value, params) in before.items():
        if state in (TrialState.COMPLETE, TrialState.PRUNED):  # finished trials are kept as they were
            assert after[number].state == state and after[number].value == value and after[number].params == params
    killed = after[killed_trial]
    assert killed.state == TrialState.FAIL
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed_trial]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert len(after) == 7  # 6 finished + the killed one
    assert "467,400" in res.stdout and "570,000" in res.stdout

    # The best config is a YAML that `xmodel train` accepts: train 2 steps with it.
    best = out / "best_mup.yaml"
    for name in ("history", "importances", "contour", "slice"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 10_000
    cfg = load_config(yaml_path=best)
    best_trial = min((t for t in after if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert cfg.preset == "nano" and cfg.train.schedule.max_lr == pytest.approx(best_trial.params["learning_rate"])
    assert cfg.model.dim_model_base == best_trial.params["dim_model_base"]
    rc = main(["train", "--data", str(prepared.path), "--tokenizer", str(tokenizer_dir), "--config", str(best),
               "--output", str(tmp_path / "train"), "--no-progress", *TINY_MODEL, *TINY_TRAIN,
               "--model.vocab_size", "4000", "--train.max_steps", "2", "--train.save_every", "2",
               "--train.sample_prompts", "[]"])
    assert rc == 0
    trained = json.loads((tmp_path / "train" / "config.json").read_text())
    assert trained["model"]["scale_emb"] == best_trial.params["scale_emb"]


@pytest.mark.slow
def test_two_worker_processes_share_one_study(prepared, tmp_path):
    out = tmp_path / "mup2"
    res = subprocess.run(mup_command(prepared.path, out, 4, "--workers", 2), cwd=REPO, env=env1(), capture_output=True,
                         text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    ts = trials(out / "study.db", "mup")
    finished = [t for t in ts if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # A worker starts a trial only while finished + running < n_trials; both may start the last one at once.
    assert 4 <= len(finished) <= 5
    assert {t.user_attrs["worker"] for t in ts} == {0, 1}
    assert len({tuple(sorted(t.params.items())) for t in ts}) == len(ts)  # distinct seeds: no duplicate proposals


def test_gp_sampler_runs_a_study(prepared, tmp_path, capsys):
    out = tmp_path / "gp"
    rc = main(["tune", "mup", "--data", str(prepared.path), "--output", str(out), "--n-trials", "3", "--sampler", "gp",
               "--threads", "1", "--tune.study.startup_trials", "1", "--tune.mup.tokens", "4096",
               "--tune.mup.evals", "1", *TINY_MODEL, *TINY_TRAIN])
    assert rc == 0
    ts = trials(out / "study.db", "mup")
    assert sum(t.state == TrialState.COMPLETE for t in ts) == 3
    assert all(math.isfinite(t.value) and t.value > 0 for t in ts)
    best = (out / "best_mup.yaml").read_text()
    (out / "best_mup.yaml").unlink()
    assert main(["tune", "report", "--output", str(out), "--study-name", "mup"]) == 0  # regenerates it
    assert (out / "best_mup.yaml").read_text() == best


def test_the_optimizer_can_be_searched(prepared, tmp_path, capsys):
    """`--tune.mup.optimizers "[adamw, muon]"` adds the optimizer as a categorical parameter; the best config
    names the winner."""
    import yaml

    out = tmp_path / "opt"
    rc = main(["tune", "mup", "--data", str(prepared.path), "--output", str(out), "--n-trials", "4", "--sampler",
               "tpe", "--threads", "1", "--tune.study.startup_trials", "4", "--tune.mup.tokens", "4096",
               "--tune.mup.evals", "1", "--tune.mup.optimizers", "[adamw, muon]", *TINY_MODEL, *TINY_TRAIN])
    assert rc == 0
    ts = trials(out / "study.db", "mup")
    assert all(t.params["optimizer"] in ("adamw", "muon") for t in ts) and len(ts) == 4
    assert "× 2 =" in capsys.readouterr().out  # the grid statement counts the optimizer
    best = yaml.safe_load((out / "best_mup.yaml").read_text())
    winner = min((t for t in ts if t.value is not None), key=lambda t: t.value)
    assert best["train"]["optimizer"] == winner.params["optimizer"]


def test_diverging_trials_fail_with_their_reason(prepared, tmp_path, capsys):
    # Weights of 1e30: every loss is inf, the trainer stops after max_bad_steps, the trial is recorded failed.
    out = tmp_path / "nan"
    rc = main(["tune", "mup", "--data", str(prepared.path), "--output", str(out), "--n-trials", "2", "--sampler", "tpe",
               "--threads", "1", "--tune.mup.tokens", "4096", "--tune.mup.evals", "1", "--tune.study.max_failures",
               "2", "--model.initializer_range", "1e30", "--train.max_bad_steps", "1", *TINY_MODEL, *TINY_TRAIN])
    assert rc == 2
    assert "2 trials in a row failed" in capsys.readouterr().err
    ts = trials(out / "study.db", "mup")
    assert [t.state for t in ts] == [TrialState.FAIL, TrialState.FAIL]
    assert all("non-finite" in t.user_attrs["fail_reason"] for t in ts)


# ---- coordinate check ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_coord_check_mup_flat_sp_logits_grow(prepared, tmp_path):
    out = tmp_path / "coord"
    # Base width = the smallest width (microsoft/mup's base shapes): every model is at m ≥ 1.
    rc = main(["tune", "coord-check", "--data", str(prepared.path), "--output", str(out), "--threads", "1",
               "--tune.coord.widths", "[64, 128, 256, 512]", "--tune.coord.steps", "4", "--tune.coord.seeds", "1",
               "--tune.coord.batch_sequences", "2", "--model.dim_model_base", "64"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 4
    rms = summary["rms"]
    for group in ("embedding", "attention", "mlp", "logits"):  # μP: flat within 1.5× over 8× in width
        assert rms[f"mup.{group}"]["ratio"] < 1.5, (group, rms[f"mup.{group}"])
    # SP: the logits grow with width. Judged by the fitted slope and the 8x-width ratio, not pair by pair: with one
    # seed and four steps, CI once saw ratio 3.46 and slope +0.61 with one neighbouring pair out of order. The
    # figures move from session to session because the session's tokenizer (hence its data) does: tokenizers'
    # trainers are not bit-reproducible (docs/DATA.md); prepare is, given the tokenizer.
    assert rms["sp.logits"]["slope"] > 0.3 and rms["sp.logits"]["ratio"] > 1.5, rms["sp.logits"]
    assert (out / "coord_check.png").stat().st_size > 10_000 and (out / "coord_check_delta.png").exists()


# ---- μTransfer -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_mup_optimum_lr_stays_within_one_grid_step(prepared, tmp_path, capsys):
    out = tmp_path / "transfer"
    lrs = [2.0 ** -k for k in range(10, 4, -1)]
    rc = main(["tune", "transfer", "--data", str(prepared.path), "--output", str(out), "--threads", "1",
               "--tune.transfer.widths", "[32, 64, 128, 256]", "--tune.transfer.lrs", json.dumps(lrs),
               "--tune.transfer.tokens", str(24 * 512), "--tune.transfer.layers", "2",
               "--model.hidden_size", "128", "--model.num_attention_heads", "4", "--model.num_key_value_heads", "2",
               "--model.intermediate_size", "320", "--model.dim_model_base", "64",
               "--train.micro_batch_size", "2", "--train.batch_tokens", "512", "--train.eval_sequences", "8",
               "--train.precision", "fp32", "--train.peak_flops", "1e11"])
    assert rc == 0
    printed = capsys.readouterr().out
    analysis = json.loads((out / "analysis.json").read_text())
    mup, sp = analysis["parametrisations"]["mup"], analysis["parametrisations"]["sp"]
    assert mup["drift_steps"] <= 1.0 + 1e-9, printed
    assert sp["drift_steps"] >= mup["drift_steps"], printed  # reported beside it; SP moves at least as much
    assert "μP: optimum drift" in printed and "SP: optimum drift" in printed
    assert (out / "transfer.png").stat().st_size > 10_000
    lines = (out / "transfer.jsonl").read_text().splitlines()
    assert len(lines) == 2 * 4 * len(lrs)
    # Rerunning continues from the results file: nothing is retrained.
    assert main(["tune", "transfer", "--data", str(prepared.path), "--output", str(out), "--threads", "1",
                 "--tune.transfer.widths", "[32, 64, 128, 256]", "--tune.transfer.lrs", json.dumps(lrs),
                 "--tune.transfer.tokens", str(24 * 512), "--tune.transfer.layers", "2",
                 "--model.hidden_size", "128", "--model.num_attention_heads", "4", "--model.num_key_value_heads",
                 "2", "--model.intermediate_size", "320", "--model.dim_model_base", "64",
                 "--train.micro_batch_size", "2", "--train.batch_tokens", "512", "--train.eval_sequences", "8",
                 "--train.precision", "fp32", "--train.peak_flops", "1e11"]) == 0
    assert "0 to go" in capsys.readouterr().out
    assert len((out / "transfer.jsonl").read_text().splitlines()) == len(lines)


# ---- decay-mixture search ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_mixture_trials_branch_from_one_stable_checkpoint(prepared, tmp_path, capsys):
    out = tmp_path / "mixture"
    # nano (d256, 9 layers) on the prepared data; 4 × 256-token sequences per step; the decay branch reads
    # 100 sequences, so an SFT share on the 0.01 grid is realised exactly.
    args = ["tune", "mixture", "--data", str(prepared.path), "--output", str(out), "--n-trials", "3", "--sampler",
            "tpe", "--threads", "1", "--tune.mixture.stable_tokens", str(8 * 1024),
            "--tune.mixture.decay_tokens", str(100 * 256), "--tune.mixture.evals", "1",
            "--train.micro_batch_size", "4", "--train.batch_tokens", "1024", "--train.eval_sequences", "4",
            "--train.peak_flops", "1e11", "--train.schedule.half_life", "10"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    stable = out / "stable"
    (ckpt_step, ckpt_path), = [(int(p.name.split("_")[1]), p) for p in (stable / "checkpoints").iterdir()]
    assert ckpt_step == 8
    stable_rows = [json.loads(line) for line in (stable / "metrics.jsonl").read_text().splitlines()]
    snapshot = {p: p.stat().st_mtime_ns for p in stable.rglob("*") if p.is_file()}
    ts = trials(out / "study.db", "mixture")
    assert [t.state for t in ts] == [TrialState.COMPLETE] * 3
    fresh_loss = math.log(4000)
    for t in ts:
        assert t.user_attrs["branch_from"] == str(ckpt_path)
        assert t.user_attrs["sequences_read"] == 100
        assert t.user_attrs["realised_sft_share"] == pytest.approx(t.params["sft_share"], abs=1e-9)
        rows = [json.loads(line) for line in (out / "trials" / f"trial_{t.number:04d}" / "metrics.jsonl")
                .read_text().splitlines()]
        assert rows[0]["step"] == ckpt_step + 1  # continues the stable run's step count
        assert rows[0]["loss"] < fresh_loss - 0.5  # starts from trained weights, not a fresh model
        assert set(t.user_attrs["heldout"]) == {"pretrain", "math", "code", "logic", "knowledge", "commonsense"}
    assert len({t.params["sft_share"] for t in ts}) == 3
    best = (out / "best_mixture.yaml").read_text()
    cfg = load_config("nano", yaml_path=out / "best_mixture.yaml")
    assert 0 <= cfg.data.decay.sft_share <= 0.9
    assert sum(cfg.data.decay.categories.values()) == pytest.approx(1, abs=1e-6)
    assert "sft_share" in best and "training the shared stable stage" in printed
    # A rerun reuses the stable checkpoint (read, never retrained) and adds the next trials to the study.
    assert main(args + ["--n-trials", "4"]) == 0
    assert "(reused)" in capsys.readouterr().out
    assert snapshot == {p: p.stat().st_mtime_ns for p in stable.rglob("*") if p.is_file()}
    assert [json.loads(line) for line in (stable / "metrics.jsonl").read_text().splitlines()] == stable_rows
    assert sum(t.state == TrialState.COMPLETE for t in trials(out / "study.db", "mixture")) == 4


def test_transfer_compares_named_lr_policies():
    """`tune.transfer.parametrisations` may name μP under each LR policy; each variant trains with its policy."""
    from xmodel.config import load_config
    from xmodel.tune.transfer import analyse
    from xmodel.errors import ConfigError
    from xmodel.tune.widths import LABELS, at_width

    cfg = load_config("nano", overrides={"model.dim_model_base": 64})
    assert at_width(cfg, 128, "mup:table6").train.mup_lr_policy == "table6"
    assert at_width(cfg, 128, "mup:standard").model.dim_model_base == 64  # still μP
    assert at_width(cfg, 128, "mup").train.mup_lr_policy == cfg.train.mup_lr_policy
    assert LABELS["mup:table6"] == "μP table6"
    with pytest.raises(ConfigError, match="parametrisations"):
        load_config("nano", overrides={"tune.transfer.parametrisations": ["mup:nope"]})
    results = [{"parametrisation": p, "width": w, "lr": lr, "seed": 0, "loss": (lr - best) ** 2}
               for p, best in (("mup:table6", 0.01), ("mup:standard", 0.02)) for w in (64, 128, 256, 512)
               for lr in (0.005, 0.01, 0.02, 0.04)]
    analysis = analyse(results, [64, 128, 256, 512], [0.005, 0.01, 0.02, 0.04], ["mup:table6", "mup:standard"])
    assert analysis["parametrisations"]["mup:table6"]["optimum"][64]["grid"] == 0.01
    assert analysis["parametrisations"]["mup:standard"]["drift"] == 1.0


@pytest.mark.slow
def test_depth_transfer_with_residual_scaling_drifts_less(prepared, tmp_path, capsys):
    """Transfer across depth (2 → 16 layers, 8×) at a tiny budget: with the residual branches scaled by
    scale_depth/√L the optimum learning rate falls with depth no faster than without (fitted trends), and stays
    within two grid steps. At 6 steps per run single grid optima are noisy (a clean clone, whose tokenizer and so
    data differ, once put depth 4's optimum one step low), so the direction is judged by the fitted trend."""
    out = tmp_path / "depth"
    lrs = [2.0 ** -k for k in range(9, 3, -1)]  # up to 2^-4: the shallowest model's optimum is high
    rc = main(["tune", "transfer", "--data", str(prepared.path), "--output", str(out), "--threads", "1",
               "--tune.transfer.axis", "depth", "--tune.transfer.depths", "[2, 4, 8, 16]",
               "--tune.transfer.parametrisations", "[mup, mup:unscaled-depth]",
               "--tune.transfer.lrs", json.dumps(lrs), "--tune.transfer.tokens", str(24 * 512),
               "--model.hidden_size", "64", "--model.num_attention_heads", "1", "--model.num_key_value_heads", "1",
               "--model.intermediate_size", "160", "--model.dim_model_base", "64",
               "--train.micro_batch_size", "4", "--train.batch_tokens", "2048", "--train.eval_sequences", "8",
               "--train.precision", "fp32", "--train.peak_flops", "1e11"])
    assert rc == 0
    printed = capsys.readouterr().out
    analysis = json.loads((out / "analysis.json").read_text())
    scaled, unscaled = (analysis["parametrisations"][p] for p in ("mup", "mup:unscaled-depth"))
    assert analysis["axis"] == "depth" and set(scaled["optimum"]) == {"2", "4", "8", "16"}
    assert scaled["drift_steps"] <= 2.0 + 1e-9, printed
    assert scaled["trend"] >= unscaled["trend"] - 0.1, printed  # seen: −0.19 vs −0.47, −0.26 vs −0.30
    assert "across depths 2–16" in printed


@pytest.mark.slow
def test_wsd_branches_trace_the_cosine_envelope(tmp_path, capsys):
    """WSD decay branches from four points of one stable run, against cosine runs planned for each branch's end:
    every branch ends below the loss it started from, and on average the branches are not worse than cosine."""
    out = tmp_path / "schedules"
    rc = main(["tune", "schedules", "--data", "synthetic", "--output", str(out), "--threads", "1",
               "--tune.schedules.stable_steps", "24", *TINY_MODEL, "--train.micro_batch_size", "4",
               "--train.batch_tokens", "256", "--train.eval_sequences", "8", "--train.precision", "fp32",
               "--train.peak_flops", "1e11"])
    assert rc == 0
    result = json.loads((out / "schedules.json").read_text())
    rows = result["rows"]
    assert [r["branch_start"] for r in rows] == [6, 12, 18, 24]
    for r in rows:  # a decay branch lowers the held-out loss below that of the point it branched from
        assert r["wsd_branch"] < r["stable_heldout"], r
    gap = sum(r["wsd_branch"] - r["cosine"] for r in rows) / len(rows)
    assert gap < 0.05 * sum(r["cosine"] for r in rows) / len(rows), rows
    assert (out / "schedules.png").stat().st_size > 10_000
