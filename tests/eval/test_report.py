"""The published tables (as transcribed) and the report built from results files."""

import re

import pytest

from xmodel.errors import XmodelError
from xmodel.eval.report import find_results, published, write_report
from xmodel.eval.results import merge_results, write_json


def test_published_averages_match_their_rows():
    pub = published()
    tables = (pub["xmodel_2"]["commonsense"], pub["xmodel_2"]["reasoning"], pub["xmodel_lm"]["commonsense"],
              pub["xmodel_lm"]["chinese"])
    for table in tables:
        off = []
        for name, *values in table["rows"]:
            assert len(values) == len(table["benchmarks"]) + 1, name
            *scores, avg = values
            if sum(scores) / len(scores) != pytest.approx(avg, abs=0.006):
                off.append(name)
        # Only the rows the YAML notes (Xmodel-LM's README prints other averages for them).
        assert off == table.get("averages_off", []), table["caption"]
    assert pub["xmodel_lm"]["commonsense"]["averages_off"] == ["Pythia-1.4B", "TinyLLaMA-3T-1.1B"]
    assert pub["xmodel_lm"]["chinese"]["averages_off"] == ["InternLM2-1.8B"]


def test_xmodel_lm_averages_are_the_means_of_their_tables():
    """FACTS: Xmodel-LM's Chinese average 40.95 = mean of ARC-zh, XCOPA-zh, XNLI-zh; its commonsense 51.41
    spans nine tasks with SciQ and TriviaQA."""
    xlm = published()["xmodel_lm"]
    chinese = dict((r[0], r[1:]) for r in xlm["chinese"]["rows"])["Xmodel-LM-1.1B"]
    assert xlm["chinese"]["benchmarks"] == ["arc_zh", "xcopa_zh", "xnli_zh"]
    assert chinese == [26.24, 60.60, 36.02, 40.95] and round(sum(chinese[:3]) / 3, 2) == 40.95
    common = dict((r[0], r[1:]) for r in xlm["commonsense"]["rows"])["Xmodel-LM-1.1B"]
    assert {"sciq", "triviaqa"} <= set(xlm["commonsense"]["benchmarks"]) and len(common) == 10
    assert round(sum(common[:9]) / 9, 2) == common[9] == 51.41


def test_published_rows_match_the_report_text(data_root):
    """Each transcribed row appears, tab-separated and in order, in the Xmodel-2 report text of the data kit's
    sibling seeds/ folder (when present)."""
    seeds = sorted((data_root.parent / "seeds").glob("*.txt"))
    text = "\n".join(p.read_text(encoding="utf-8") for p in seeds)
    if "Xmodel-2 Technical Report" not in text:
        pytest.skip("the Xmodel-2 report text is not beside the data root")
    pub = published()
    for table in (pub["xmodel_2"]["commonsense"], pub["xmodel_2"]["reasoning"]):
        for name, *values in table["rows"]:
            line = "\t".join([name, *(f"{v:.2f}" for v in values)])
            assert line in text, line
    assert "51.41" in text and "40.95" in text  # Xmodel-LM's averages


def _results(tmp_path, name, rows, limit=None, **extras):
    from xmodel.eval.suites import BENCHMARKS

    benchmarks = {b: {"task": f"xmodel_{b}", "column": b, "metric": "acc,none", "value": v, "stderr": 1.0,
                      "n": 10, "n_total": 100, "num_fewshot": 0, "settings": {"limit": limit, "dtype": "float32"},
                      "date": "2026-01-01T00:00:00"} for b, v in rows.items()}
    for b, row in benchmarks.items():  # as harness._result_row writes them
        if BENCHMARKS[b].subset:
            row["subset"] = BENCHMARKS[b].subset
        if BENCHMARKS[b].protocol:
            row["protocol"] = BENCHMARKS[b].protocol
    data = merge_results(None, {"name": name, "path": str(tmp_path / name)}, {"suites": []}, benchmarks,
                         {"sciq": "benchmark files not found"}, extras)
    return write_json(tmp_path / "runs" / name / "results.json", data)


def test_report_puts_our_rows_beside_the_published_ones(tmp_path):
    full = {"arc_challenge": 30.0, "arc_easy": 60.0, "boolq": 62.0, "hellaswag": 45.0, "openbookqa": 25.0,
            "piqa": 70.0, "sciq": 85.0, "winogrande": 55.0}
    _results(tmp_path, "complete", full)
    _results(tmp_path, "partial", {"arc_easy": 41.5, "gsm8k": 2.0}, limit=20)
    md, page = write_report([str(tmp_path / "runs")], tmp_path / "report")
    text = md.read_text()
    assert "| Model | ARC-c | ARC-e | Boolq | HS. | OB. | PiQA | SciQ | Wino. | Avg |" in text
    assert "| Xmodel-2-1.2B | 39.16 | 71.55 | 74.65 | 47.45 | 29.20 | 74.81 | 93.60 | 63.93 | 61.79 |" in text
    avg = sum(full.values()) / 8
    assert f"| **complete** | **30.00** | **60.00** | **62.00** | **45.00** | **25.00** | **70.00** | **85.00** | " \
           f"**55.00** | **{avg:.2f}** |" in text
    # A partial row: missing benchmarks show –, the average is marked, the limit is in the label.
    assert "| **partial (limit 20)** | – | **41.50** | – | – | – | – | – | – | **41.50†** |" in text
    assert "| **partial (limit 20)** | **2.00** | – | – | – | – | – | **2.00†** |" in text
    # Xmodel-LM's commonsense table (nine tasks, its 51.41 as a row): ours is partial there (no TriviaQA run).
    assert "| Xmodel-LM-1.1B | 28.16 | 62.29 | 61.44 | 45.96 | 24.00 | 72.03 | 89.70 | 18.46 | 60.62 | 51.41 |" in text
    assert f"| **complete** | **30.00** | **60.00** | **62.00** | **45.00** | **25.00** | **70.00** | **85.00** | " \
           f"– | **55.00** | **{avg:.2f}†** |" in text
    assert "## Chinese ability (Xmodel-LM, zero-shot)" not in text  # none of ours ran those tasks
    html = page.read_text()
    assert html.count("<tr class='ours'>") == 5 and "<td>61.79</td>" in html
    assert re.search(r"skipped benchmark", text)


def test_chinese_tables_are_xmodel_lms_and_c_eval_stands_alone(tmp_path):
    """Xmodel-LM's 40.95 sits beside ARC-zh/XCOPA-zh/XNLI-zh (the tasks it averages); C-Eval and CMMLU get a
    table of their own with no published row."""
    _results(tmp_path, "m", {"arc_zh": 25.0, "xcopa_zh": 55.0, "xnli_zh": 34.0, "ceval": 24.0, "cmmlu": 26.0})
    md, _ = write_report([str(tmp_path / "runs")], tmp_path / "report")
    text = md.read_text()
    chinese = text.split("## Chinese ability (Xmodel-LM, zero-shot)")[1].split("\n## ")[0]
    assert "| Model | ARC-zh | XCOPA-zh | XNLI-zh | Avg |" in chinese
    assert "| Xmodel-LM-1.1B | 26.24 | 60.60 | 36.02 | 40.95 |" in chinese
    assert "| **m** | **25.00** | **55.00** | **34.00** | **38.00** |" in chinese
    assert "C-Eval" not in chinese and "CMMLU" not in chinese
    exams = text.split("## C-Eval and CMMLU")[1].split("\n## ")[0]
    assert "| Model | C-Eval | CMMLU | Avg |" in exams and "| **m** | **24.00** | **26.00** | **25.00** |" in exams
    assert "40.95" not in exams and "Xmodel-LM" not in exams and "no published row" in exams


def test_triviaqa_sample_is_labelled_as_a_subset_in_every_table(tmp_path):
    full = {"arc_challenge": 30.0, "arc_easy": 60.0, "boolq": 62.0, "hellaswag": 45.0, "openbookqa": 25.0,
            "piqa": 70.0, "sciq": 85.0, "triviaqa": 12.0, "winogrande": 55.0}
    _results(tmp_path, "m", full)
    md, page = write_report([str(tmp_path / "runs")], tmp_path / "report")
    text = md.read_text()
    table = text.split("## Commonsense reasoning (Xmodel-LM, zero-shot)")[1].split("\n## ")[0]
    assert "| Model | ARC-c | ARC-e | Boolq | HS. | OB. | PiQA | SciQ | TriviaQA | Wino. | Avg |" in table
    assert "**12.00‡**" in table and f"**{sum(full.values()) / 9:.2f}**" in table
    assert "‡ TriviaQA: our number covers a subset — 3,000-question sample" in table
    settings = text.split("## Settings")[1]
    assert "| m | triviaqa |" in settings and "‡ subset: 3,000-question sample" in settings
    assert "12.00‡" in page.read_text()


def test_code_columns_follow_bigcode_and_older_results_are_marked(tmp_path):
    _results(tmp_path, "new", {"humaneval": 10.0, "mbpp": 12.0})
    path = _results(tmp_path, "old", {"humaneval": 11.0, "mbpp": 13.0})
    import json

    data = json.loads(path.read_text())
    for row in data["benchmarks"].values():  # as written before the bigcode protocol
        row.pop("protocol")
    path.write_text(json.dumps(data))
    md, _ = write_report([str(tmp_path / "runs")], tmp_path / "report")
    text = md.read_text()
    assert "| **new** | – | – | – | – | **10.00** | **12.00** | **11.00†** |" in text
    assert "| **old** | – | – | – | – | **11.00§** | **13.00§** | **12.00†** |" in text
    assert "§ measured under another protocol" in text


def test_calibration_table_has_both_views(tmp_path):
    from xmodel.eval.calibration import calibration

    top = calibration([0.9, 0.6], [True, False]).to_dict()
    per = calibration([0.9, 0.05, 0.03, 0.02, 0.6, 0.2, 0.1, 0.1], [1, 0, 0, 0, 0, 1, 0, 0]).to_dict()
    _results(tmp_path, "new", {"mmlu": 30.0}, calibration={"benchmark": "mmlu", "questions": 2, "per_choice": per,
                                                             "top_label": top})
    _results(tmp_path, "old", {"mmlu": 30.0}, calibration={"benchmark": "mmlu", **top})  # before per-choice
    md, _ = write_report([str(tmp_path / "runs")], tmp_path / "report")
    text = md.read_text().split("## Calibration on MMLU")[1]
    assert f"| new | every A/B/C/D option (Figure 4) | 2 | 8 | 25.00 | 25.00 | {per['ece']:.4f} |" in text
    assert f"| new | chosen letter (top label) | 2 | 2 | 50.00 | 75.00 | {top['ece']:.4f} |" in text
    assert f"| old | chosen letter (top label) | 2 | 2 | 50.00 | 75.00 | {top['ece']:.4f} |" in text


def test_report_input_errors(tmp_path):
    with pytest.raises(XmodelError, match="no such file or directory"):
        find_results([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(XmodelError, match="no results.json"):
        find_results([str(tmp_path / "empty")])
    bad = tmp_path / "results.json"
    bad.write_text("{}")
    with pytest.raises(XmodelError, match="not an xmodel eval results file"):
        find_results([str(bad)])
