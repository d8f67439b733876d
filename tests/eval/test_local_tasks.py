"""Every task loads its local file in its own format and renders the official number of documents; missing
files are skipped with a message, malformed ones fail with one line naming file and line."""

import logging
import os

import pytest

from xmodel.errors import XmodelError
from xmodel.eval import local_files as lf
from xmodel.eval.local_files import BenchmarkFileError, parse_bbh_cot_prompt, read_records
from xmodel.eval.suites import BENCHMARKS, TASKS_DIR, leaf_tasks, missing_files, suite_benchmarks

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Official split sizes (SOURCES.md "Known split sizes checked", the benchmarks' papers).
EXPECTED_DOCS = {
    "arc_challenge": (1, 1172), "arc_easy": (1, 2376), "boolq": (1, 3270), "hellaswag": (1, 10042),
    "openbookqa": (1, 500), "piqa": (1, 1838), "winogrande": (1, 1267), "gsm8k": (1, 1319), "math": (7, 5000),
    "bbh": (27, 6511), "mmlu": (57, 14042), "humaneval": (1, 164), "mbpp": (1, 500), "cmmlu": (67, 11582),
    "sciq": (1, 1000), "ceval": (52, 1346), "humaneval_lmeval": (1, 164), "mbpp_lmeval": (1, 500),
    # Xmodel-LM's tables: XCOPA zh test, XNLI zh validation (dev), Okapi ARC-zh test, the TriviaQA sample.
    "xcopa_zh": (1, 500), "xnli_zh": (1, 2490), "arc_zh": (1, 1170), "triviaqa": (1, 3000),
}


@pytest.fixture(scope="module")
def manager(data_root):
    from lm_eval.tasks import TaskManager

    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_root": str(data_root)})


@pytest.mark.parametrize("name", sorted(EXPECTED_DOCS))
def test_task_renders_official_document_count(manager, name):
    n_tasks, n_docs = EXPECTED_DOCS[name]
    loaded = manager.load([BENCHMARKS[name].task])
    tasks = loaded["tasks"]
    assert len(tasks) == n_tasks
    assert sum(len(t.eval_docs) for t in tasks.values()) == n_docs
    # The first document renders to a prompt (and, for multiple choice, its choices).
    task = next(iter(tasks.values()))
    doc = task.eval_docs[0]
    if name != "xnli_zh":  # lm-eval's xnli puts the whole text in the choices, its prompt is empty
        assert task.doc_to_text(doc) not in ("", None)
    if task.OUTPUT_TYPE == "multiple_choice":
        assert len(task.doc_to_choice(doc)) >= 2


def test_sciq_rows_keep_the_correct_answer_last(manager):
    # The kit's SciQ csv shuffles the options; the layout puts the lettered answer where lm-eval's sciq
    # template expects it (choice 3) and keeps the support paragraph (empty for some questions).
    task = next(iter(manager.load(["xmodel_sciq"])["tasks"].values()))
    doc = task.eval_docs[0]
    assert task.doc_to_choice(doc)[task.doc_to_target(doc)] == doc["correct_answer"]
    assert task.doc_to_text(doc).startswith("Oxidants and Reductants")
    assert any(d["support"] == "" for d in task.eval_docs)


def test_every_benchmark_has_its_files(data_root):
    for name in EXPECTED_DOCS:
        assert missing_files(BENCHMARKS[name], data_root) == [], name


def test_run_benchmarks_skips_missing_files_with_a_message(tmp_path, capsys):
    from xmodel.eval.harness import run_benchmarks

    out = run_benchmarks(lm=None, benchmarks=suite_benchmarks(["commonsense"], ["arc_easy", "sciq"]),
                         data_root=tmp_path)
    assert out["benchmarks"] == {}
    assert set(out["skipped"]) == {"arc_easy", "sciq"}
    assert "eval/arc/ARC-Easy-Test.jsonl" in out["skipped"]["arc_easy"]
    printed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("skipped sciq: ") and "eval/sciq/test.mcqa_shuffled.csv" in line for line in printed)


def test_malformed_files_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{"a": 2\n', encoding="utf-8")
    with pytest.raises(BenchmarkFileError, match=r"bad.jsonl:2: malformed JSON line"):
        read_records(bad)
    csv = tmp_path / "bad.csv"
    csv.write_text("question,choice0,answer\nq,a,0\nq,a,0,extra\n", encoding="utf-8")
    with pytest.raises(BenchmarkFileError, match=r"bad.csv:3: row has"):
        read_records(csv)
    with pytest.raises(BenchmarkFileError, match="benchmark file not found"):
        read_records(tmp_path / "missing.jsonl")
    prompt = tmp_path / "cot.txt"
    prompt.write_text("canary\n-----\nA task.\n\nQ: a question\nA: no step by step here\n", encoding="utf-8")
    with pytest.raises(BenchmarkFileError, match="cot.txt: a shot does not read"):
        parse_bbh_cot_prompt(prompt)


def test_suite_selection_errors_are_one_line():
    with pytest.raises(XmodelError, match="--suite nope: unknown"):
        suite_benchmarks(["nope"])
    with pytest.raises(XmodelError, match="--tasks gsm8k: not in the chosen suites"):
        suite_benchmarks(["commonsense"], ["gsm8k"])
    names = [b.name for b in suite_benchmarks(["all"])]
    assert names[:8] == ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "sciq",
                         "winogrande"]
    assert {"gsm8k", "math", "bbh", "mmlu", "humaneval", "mbpp", "cmmlu", "ceval"} <= set(names)


def test_builtin_names_for_hub_source_exist_in_lm_eval():
    """`--source hub` runs lm-eval's built-in task or group of each benchmark: each name is declared there."""
    import re
    from pathlib import Path

    import lm_eval.tasks

    root = Path(lm_eval.tasks.__file__).parent
    declared = set()
    for path in root.rglob("*.yaml"):
        text = path.read_text(encoding="utf-8", errors="replace")
        declared.update(re.findall(r'^(?:task|group): "?([\w\-.]+)"?\s*$', text, flags=re.M))
    for b in BENCHMARKS.values():
        if b.builtin:  # the bigcode code tasks have no lm-eval equivalent
            assert b.builtin in declared, b.builtin
    assert {b.name for b in BENCHMARKS.values() if not b.builtin} == {"humaneval", "mbpp"}


def test_suites_of_the_reports_tables():
    """`code` is Table 3's bigcode protocol (lm-eval's variants under their own names), `xmodel-lm-chinese` is
    the three tasks of Xmodel-LM's Chinese average, `xmodel-lm-commonsense` Table 2's eight plus TriviaQA, and
    `chinese` (C-Eval, CMMLU) stands alone."""
    code = suite_benchmarks(["code"])
    assert [b.name for b in code] == ["humaneval", "mbpp"]
    assert {b.protocol for b in code} == {"bigcode-evaluation-harness"} and {b.shots for b in code} == {"0-shot"}
    assert [b.name for b in suite_benchmarks(["code-lmeval"])] == ["humaneval_lmeval", "mbpp_lmeval"]
    assert [b.name for b in suite_benchmarks(["xmodel-lm-chinese"])] == ["arc_zh", "xcopa_zh", "xnli_zh"]
    lm_commonsense = [b.name for b in suite_benchmarks(["xmodel-lm-commonsense"])]
    assert lm_commonsense == ["arc_challenge", "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "sciq",
                              "triviaqa", "winogrande"]
    assert [b.name for b in suite_benchmarks(["chinese"])] == ["cmmlu", "ceval"]
    assert BENCHMARKS["triviaqa"].subset.startswith("3,000-question sample")
    assert [b.name for b in suite_benchmarks(["all"]) if b.subset] == ["triviaqa"]
    assert not {"humaneval_lmeval", "mbpp_lmeval"} & {b.name for b in suite_benchmarks(["all"])}


def test_tsv_rows_and_layout_errors(tmp_path):
    tsv = tmp_path / "x.tsv"
    tsv.write_text('text_a\ttext_b\tlabel\n"他说"\t她\tneutral\n', encoding="utf-8")
    (row,) = read_records(tsv)
    assert lf.xnli_tsv_row(row) == {"premise": '"他说"', "hypothesis": "她", "label": 1}  # quotes kept as text
    with pytest.raises(ValueError, match="XNLI label"):
        lf.xnli_tsv_row({"text_a": "a", "text_b": "b", "label": "maybe"})
    assert lf.okapi_arc_row({"id": "x", "answer": "A", "instruction": "q", "option_a": "1", "option_b": "2",
                             "option_c": "3"})["option_e"] == ""
