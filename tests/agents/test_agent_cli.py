"""`xmodel agent` end to end with a real (untrained, 2-layer nano) model, Table 4, and one-line errors."""

import json

import pytest

from xmodel.cli.main import main
from xmodel.eval.agents import suite


@pytest.mark.slow
def test_model_runs_episodes_end_to_end(nano_model_dir, data_root, tmp_path, capsys):
    out = tmp_path / "run"
    tasks = ["--task", "hotpotqa", "--task", "fever", "--task", "webshop"]
    from xmodel.eval.agents.alfworld import alfworld_available
    if alfworld_available():
        tasks += ["--task", "alfworld"]
    assert main(["agent", "run", str(nano_model_dir), *tasks, "--episodes", "2", "--batch-size", "2",
                 "--max-new-tokens", "12", "--max-steps", "3", "--output", str(out),
                 "--data-root", str(data_root)]) == 0
    printed = capsys.readouterr().out
    assert "| hotpotqa | EM |" in printed and "skipped: needs a running WebShop server" in printed
    res = suite.load_results(out)
    assert res["policy"] == "model" and res["model"]["name"] == "nano"
    for task in [t for t in ("hotpotqa", "fever", "alfworld") if t in res["tasks"]]:
        t = res["tasks"][task]
        assert t["n"] == 2 and 0 <= t["value"] <= 100
        assert set(t["stop_reasons"]) <= {"finished", "step_limit", "repeated_action"}
        lines = (out / t["traces"]).read_text().splitlines()
        assert len(lines) == 2
        rec = json.loads(lines[0])
        assert rec["steps"] and rec["calls"] >= len(rec["steps"]) and rec["prompt"]
        assert t["timing"]["generation_s"] > 0
    assert "webshop" in res["skipped"]
    assert main(["agent", "table", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| Xmodel-2-1.2B | 13.70 | 40.00 | 0.78 | 2.20 | 14.21 |" in table
    assert "**nano (n=2)**" in table


def test_table4_layout_and_published_rows():
    pub = suite.published()
    assert pub["columns"] == ["hotpotqa", "fever", "alfworld", "webshop"] and len(pub["rows"]) == 14
    off = [r[0] for r in pub["rows"] if abs(sum(r[1:5]) / 4 - r[5]) > 0.015]
    assert off == ["OLMo-1B", "MiniCPM-1.2B", "Xmodel-2-1.2B"]      # as noted in published_table4.yaml
    ours = {"format": suite.FORMAT, "model": {"name": "m"}, "policy": "model", "skipped": {"webshop": "x"},
            "tasks": {"hotpotqa": {"value": 10.0, "n": 5, "subset": "covered", "coverage": {"covered": 5}},
                      "fever": {"value": 20.0, "n": 5}, "alfworld": {"value": 0.0, "n": 5}}}
    header, rows, idx = suite.table4_rows([ours])
    assert header == ["Model", "HotpotQA EM", "FEVER EM", "AlfWorld SR", "WebShop SR", "Avg"]
    # A row on the covered questions says it is the easier set, not ReAct's picks.
    assert idx == {14} and rows[14] == ["m (n=5) [covered subset: easier, not ReAct's picks]", "10.00", "20.00",
                                        "0.00", "–", "10.00†"]
    ours["tasks"]["hotpotqa"]["subset"] = "react"
    assert suite.table4_rows([ours])[1][14][0] == "m (n=5)"


def test_reacts_picks_are_the_default():
    """`xmodel agent run` and the agent suite default to ReAct's question picks; the oracle to the covered set."""
    from xmodel.cli.main import build_parser

    assert suite.AgentSettings().subset == "react"
    parser = build_parser()
    assert parser.parse_args(["agent", "run", "m"]).subset == "react"
    assert parser.parse_args(["agent", "oracle"]).subset == "covered"


@pytest.mark.parametrize("args, needle", [
    (["agent", "run", "/no/such/model"], "no such model directory"),
    (["agent", "oracle", "--task", "chess"], "agent.tasks: unknown task chess"),
    (["agent", "oracle", "--episodes", "0"], "agent.episodes: must be ≥ 1"),
    (["agent", "recall", "--k", "a,b"], "--k a,b: expected comma-separated integers"),
    (["agent", "table", "/no/such/results"], "no agent results"),
    (["agent", "wiki", "x", "--data-root", "/no/such/dir"], "no such directory"),
])
def test_bad_input_is_one_line(args, needle, data_root, capsys):
    if "--data-root" not in args and args[1] in ("run", "oracle", "recall"):
        args = [*args, "--data-root", str(data_root)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_oracle_and_recall_commands(data_root, tmp_path, capsys):
    assert main(["agent", "oracle", "--task", "hotpotqa", "--task", "fever", "--episodes", "5", "--output",
                 str(tmp_path), "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "| hotpotqa | EM | 100.00 | 5 |" in out and "| fever | EM | 100.00 | 5 |" in out
    assert main(["agent", "recall", "--questions", "50", "--data-root", str(data_root)]) == 0
    out = capsys.readouterr().out
    assert "hotpotqa         50     100" in out and "100.0%" in out
