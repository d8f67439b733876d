"""End to end: `xmodel eval` on every suite with a small --limit on a nano model made by `xmodel init`, then
`xmodel report` on the results; bad input gives one line. Also the training-time hook."""

import json
import shutil
import subprocess
import sys

import pytest

from xmodel.cli.main import main


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, nano_model_dir, data_root):
    """Every suite once, into one results directory (the runs merge into results.json)."""
    out = tmp_path_factory.mktemp("eval-out")
    common = [str(nano_model_dir), "--output", str(out), "--data-root", str(data_root), "--batch-size", "4"]
    runs = {
        "commonsense": ["--suite", "commonsense", "--limit", "4"],
        "reasoning": ["--suite", "reasoning", "--limit", "1", "--max-gen-toks", "8"],
        "code": ["--suite", "code", "--limit", "2", "--max-gen-toks", "24", "--log-samples"],
        "chinese": ["--suite", "chinese", "--limit", "1"],
        "xmodel-lm-chinese": ["--suite", "xmodel-lm-chinese", "--limit", "2"],
        "triviaqa": ["--suite", "xmodel-lm-commonsense", "--tasks", "triviaqa", "--limit", "2", "--max-gen-toks", "8"],
        "scaling-law": ["--suite", "scaling-law", "--context-length", "128", "--max-windows", "4"],
    }
    codes = {name: main(["eval", *common, *args]) for name, args in runs.items()}
    return out, codes


@pytest.mark.slow
def test_every_suite_runs_end_to_end(evaluated):
    out, codes = evaluated
    assert codes == dict.fromkeys(codes, 0)
    res = json.loads((out / "results.json").read_text())
    assert res["format"] == "xmodel-eval-results/1" and len(res["runs"]) == 7
    expected = {"arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "winogrande", "gsm8k",
                "math", "bbh", "mmlu", "humaneval", "mbpp", "cmmlu", "sciq", "ceval", "arc_zh", "xcopa_zh",
                "xnli_zh", "triviaqa"}
    assert set(res["benchmarks"]) == expected
    assert not res.get("skipped")
    for name, row in res["benchmarks"].items():
        assert 0.0 <= row["value"] <= 100.0, name
        assert row["settings"]["limit"] in (1, 2, 4)
    shots = {n: res["benchmarks"][n]["num_fewshot"] for n in ("gsm8k", "math", "bbh", "mmlu", "mbpp", "arc_zh")}
    assert shots == {"gsm8k": 5, "math": 4, "bbh": 3, "mmlu": 0, "mbpp": 0, "arc_zh": 0}  # MBPP: bigcode's, 0-shot
    assert res["benchmarks"]["mmlu"]["n"] == 57 and res["benchmarks"]["bbh"]["n"] == 27
    assert res["benchmarks"]["ceval"]["n"] == 52
    assert res["benchmarks"]["cmmlu"]["n"] == 67 and res["benchmarks"]["humaneval"]["n"] == 2
    assert res["benchmarks"]["humaneval"]["protocol"] == "bigcode-evaluation-harness"
    assert res["benchmarks"]["humaneval"]["sampling"] == {"n": 1, "decoding": "greedy", "metric": "pass@1"}
    assert res["benchmarks"]["triviaqa"]["subset"].startswith("3,000-question sample")
    assert {res["benchmarks"][n]["n"] for n in ("arc_zh", "xcopa_zh", "xnli_zh", "triviaqa")} == {2}
    cal = res["calibration"]
    assert cal["questions"] == 57 and cal["top_label"]["n"] == 57 and cal["per_choice"]["n"] == 4 * 57
    assert 0.0 <= cal["top_label"]["ece"] <= 1.0 and 0.0 <= cal["per_choice"]["ece"] <= 1.0
    assert (out / "calibration_mmlu.png").read_bytes()[:4] == b"\x89PNG"
    assert res["code_sandbox"]["python_guard"] is True
    # --log-samples: every code request's prompt and response, as lm-eval logs them.
    samples = [json.loads(line) for line in (out / "samples_xmodel_humaneval.jsonl").read_text().splitlines()]
    assert len(samples) == 2 and (out / "samples_xmodel_mbpp.jsonl").is_file()
    (prompt, gen_kwargs), = samples[0]["arguments"]
    assert prompt.startswith("from typing import List") and not prompt.endswith("\n")
    assert isinstance(samples[0]["resps"][0][0], str) and "pass@1" in samples[0]
    sl = res["scaling_law"]
    assert sl["context_length"] == 128 and sl["windows"] == 4 and len(sl["loss_by_position"]) == 127
    assert (out / "scaling_law_wikitext2.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_report_from_the_run(evaluated, tmp_path):
    out, _ = evaluated
    assert main(["report", str(out), "--output", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    for heading in ("## Commonsense reasoning (Xmodel-2 Table 2, zero-shot)", "## Complex reasoning (Xmodel-2 Table 3)",
                    "## Commonsense reasoning (Xmodel-LM, zero-shot)", "## Chinese ability (Xmodel-LM, zero-shot)",
                    "## C-Eval and CMMLU", "## Calibration on MMLU", "## Post-training scaling law (WikiText-2)",
                    "## Settings"):
        assert heading in text
    assert "| Xmodel-LM-1.1B | 26.24 | 60.60 | 36.02 | 40.95 |" in text and "‡" in text
    assert "| **nano (limit 4)** |" in text  # our row, labelled with its limit
    assert (tmp_path / "report" / "plots" / "nano_calibration_mmlu.png").is_file()
    assert "<img src='plots/nano_scaling_law_wikitext2.png'" in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.slow
def test_sampled_code_pass_at_k(nano_model_dir, data_root, tmp_path):
    assert main(["eval", str(nano_model_dir), "--suite", "code", "--tasks", "humaneval", "--limit", "1",
                 "--max-gen-toks", "16", "--code-samples", "5", "--output", str(tmp_path),
                 "--data-root", str(data_root)]) == 0
    row = json.loads((tmp_path / "results.json").read_text())["benchmarks"]["humaneval"]
    assert row["task"] == "xmodel_humaneval_sampled" and row["metric"] == "pass@1,all-samples"
    assert {"pass@1,all-samples", "pass@5,all-samples"} <= set(row["lm_eval_metrics"])
    # bigcode's default temperature for pass@1-style sampling (n < 10), stated with the number.
    assert row["sampling"]["temperature"] == 0.2 and row["sampling"]["top_p"] == 0.95
    assert row["settings"]["code_temperature"] == 0.2 and "bigcode" in row["settings"]["code_sampling"][
        "temperature_from"]


@pytest.mark.slow
def test_generation_budget_is_capped_to_a_short_context(nano_model_dir, data_root, tmp_path):
    """HumanEval asks for 512 tokens, more than a 128-token model holds (lm-eval would stop on its assertion):
    the budget is capped to half the context, and the results' settings say so."""
    short = tmp_path / "short"
    shutil.copytree(nano_model_dir, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 128}))
    assert main(["eval", str(short), "--suite", "code", "--tasks", "humaneval", "--limit", "1", "--output",
                 str(tmp_path / "out"), "--data-root", str(data_root)]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    capped = {"to": 64, "context": 128, "tasks": {"xmodel_humaneval": 512}}  # bigcode's 512-token budget
    assert res["benchmarks"]["humaneval"]["settings"]["max_gen_toks_capped"] == capped
    assert res["runs"][-1]["settings"]["max_gen_toks_capped"] == capped


def test_evaluate_during_training(nano_model_dir, data_root):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xmodel.eval import evaluate_during_training

    model = AutoModelForCausalLM.from_pretrained(nano_model_dir).train()
    tokenizer = AutoTokenizer.from_pretrained(nano_model_dir)
    metrics = evaluate_during_training(model, tokenizer, suite="quick", limit=3, data_root=data_root)
    assert {"eval/arc_easy/acc", "eval/hellaswag/acc", "eval/piqa/acc"} <= set(metrics)
    assert all(0.0 <= metrics[k] <= 100.0 for k in metrics if k.endswith("/acc"))
    assert metrics["eval/seconds"] > 0 and model.training


@pytest.mark.parametrize("args,needle", [
    (["eval", "/no/such/model"], "no such model directory"),
    (["eval", "MODEL", "--data-root", "/no/such/root"], "--data-root /no/such/root: no such directory"),
    (["eval", "MODEL", "--tasks", "gsm8k"], "--tasks gsm8k: not in the chosen suites"),
    (["eval", "MODEL", "--limit", "0"], "--limit: must be > 0"),
    (["eval", "MODEL", "--suite", "nope"], "invalid choice"),
    (["eval", "MODEL", "--tokenizer", "/no/such/tokenizer"], "no tokenizer found"),
    (["report", "/no/such/results"], "no such file or directory"),
])
def test_bad_input_is_one_line(args, needle, nano_model_dir, data_root, capsys):
    args = [str(nano_model_dir) if a == "MODEL" else a for a in args]
    if args[0] == "eval" and "--data-root" not in args:
        args += ["--data-root", str(data_root)]
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and needle in lines[0], err


def test_cli_error_in_a_real_process(nano_model_dir, data_root):
    res = subprocess.run([sys.executable, "-m", "xmodel.cli.main", "eval", str(nano_model_dir), "--data-root",
                          str(data_root), "--tasks", "nope"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == ["xmodel eval: error: --tasks nope: not in the chosen suites (known: "
                                               "arc_challenge, arc_easy, boolq, hellaswag, openbookqa, piqa, sciq, "
                                               "winogrande)"]
