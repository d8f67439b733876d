"""The published tables (as transcribed) and the report built from results files."""

import re

import pytest

from xmodel.errors import XmodelError
from xmodel.eval.report import find_results, published, write_report
from xmodel.eval.results import merge_results, write_json


def test_published_averages_match_their_rows():
    pub = published()
    for table in (pub["xmodel_2"]["commonsense"], pub["xmodel_2"]["reasoning"]):
        for name, *values in table["rows"]:
            assert len(values) == len(table["benchmarks"]) + 1, name
            *scores, avg = values
            assert sum(scores) / len(scores) == pytest.approx(avg, abs=0.006), name


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
    benchmarks = {b: {"task": f"xmodel_{b}", "column": b, "metric": "acc,none", "value": v, "stderr": 1.0,
                      "n": 10, "n_total": 100, "num_fewshot": 0, "settings": {"limit": limit, "dtype": "float32"},
                      "date": "2026-01-01T00:00:00"} for b, v in rows.items()}
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
    assert "Xmodel-LM-1.1B reports an average of 51.41" in text
    html = page.read_text()
    assert html.count("<tr class='ours'>") == 3 and "<td>61.79</td>" in html
    assert re.search(r"skipped benchmark", text)


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
