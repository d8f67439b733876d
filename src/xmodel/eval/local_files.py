"""Benchmark files of the data root, read in their own formats and handed to lm-eval as `datasets` objects.

Our task YAMLs name a loader here as lm-eval's ``custom_dataset`` and the files under ``dataset_kwargs``:

    custom_dataset: !function xmodel.eval.local_files.load_local
    dataset_kwargs:
      files: {test: eval/arc/ARC-Easy-Test.jsonl}

lm-eval calls the loader with the task's metadata (``data_root`` comes from there: `xmodel eval` passes it,
a plain ``lm_eval --metadata '{"data_root": DIR}'`` run can too) plus these keyword arguments. The ``layout``
functions below turn each original layout (AI2 jsonl, SuperGLUE jsonl, llm-foundry ICL rows, CSV) into the
field layout of the Hugging Face hub copy that lm-eval's built-in task reads, so our YAMLs keep the built-in
prompt templates unchanged.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..data.root import data_root as resolve_data_root
from ..errors import XmodelError


class BenchmarkFileError(XmodelError):
    """A benchmark file is missing or malformed (the message names the file and line)."""


# ---------------------------------------------------------------- reading files as they are

def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def read_records(path: Path, field: str | None = None) -> list[dict]:
    """Rows of a .jsonl(.gz), .json (a list, or a dict holding the list under `field`), .csv or .tsv file.

    Parsed once per file version (several subtasks read the same file, e.g. MATH's seven subjects); each call
    gets its own copies of the rows.
    """
    if not path.is_file():
        raise BenchmarkFileError(f"{path}: benchmark file not found")
    stat = path.stat()
    rows = _parse_records(path.resolve(), field, stat.st_mtime_ns, stat.st_size)
    return [dict(r) for r in rows]


@lru_cache(maxsize=16)
def _parse_records(path: Path, field: str | None, _mtime_ns: int, _size: int) -> tuple[dict, ...]:
    name = path.name.removesuffix(".gz")
    rows: list[dict] = []
    with _open_text(path) as fh:
        if name.endswith(".jsonl"):
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise BenchmarkFileError(f"{path}:{lineno}: malformed JSON line ({e.msg})") from None
                if not isinstance(row, dict):
                    raise BenchmarkFileError(f"{path}:{lineno}: expected a JSON object per line")
                rows.append(row)
        elif name.endswith(".json"):
            try:
                data = json.load(fh)
            except json.JSONDecodeError as e:
                raise BenchmarkFileError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
            if field is not None:
                if not isinstance(data, dict) or field not in data:
                    raise BenchmarkFileError(f"{path}: expected a JSON object with a {field!r} list")
                data = data[field]
            if not isinstance(data, list):
                raise BenchmarkFileError(f"{path}: expected a JSON list of records")
            rows = data
        elif name.endswith((".csv", ".tsv")):
            # TSV as written by split("\t") readers (XNLI's task-data files): no quoting, a quote is a character.
            reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE) if name.endswith(".tsv") \
                else csv.DictReader(fh)
            for lineno, row in enumerate(reader, 2):
                if None in row or any(v is None for v in row.values()):
                    raise BenchmarkFileError(f"{path}:{lineno}: row has {len(row)} fields, header has "
                                             f"{len(reader.fieldnames or [])}")
                rows.append(row)
        else:
            raise BenchmarkFileError(f"{path}: unknown file type (expected .jsonl, .json, .csv or .tsv)")
    return tuple(rows)


def _to_dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)


def load_local(data_root: str | None = None, files: dict[str, str] | None = None, field: str | None = None,
               where: dict[str, Any] | None = None, layout: str | None = None, **_metadata: Any):
    """lm-eval ``custom_dataset``: {split: file relative to the data root} → a DatasetDict.

    `field` names the list inside a .json object; `where` keeps the rows whose fields equal the given values
    (one file holding several subtasks, e.g. MATH's subjects in llm-foundry's file); `layout` names the
    function of `LAYOUTS` that turns each row into the hub layout the built-in task's template reads (none:
    the file already has it).
    """
    import datasets

    if not files:
        raise BenchmarkFileError("dataset_kwargs.files: no benchmark files named")
    if layout is not None and layout not in LAYOUTS:
        raise BenchmarkFileError(f"dataset_kwargs.layout {layout!r}: unknown (known: {', '.join(LAYOUTS)})")
    root = resolve_data_root(data_root)
    splits = {}
    for split, rel in files.items():
        rows = read_records(root / rel, field)
        if where:
            rows = [r for r in rows if all(r.get(k) == v for k, v in where.items())]
        if layout is not None:
            try:
                rows = [LAYOUTS[layout](r) for r in rows]
            except (KeyError, ValueError, TypeError) as e:
                raise BenchmarkFileError(f"{root / rel}: a row does not have the {layout} layout ({e!r})") from None
        splits[split] = _to_dataset(rows)
    return datasets.DatasetDict(splits)


def required_files(dataset_kwargs: dict | None) -> list[str]:
    """The data-root-relative files a task's dataset_kwargs name (used to skip tasks whose files are absent)."""
    kwargs = dataset_kwargs or {}
    out = list((kwargs.get("files") or {}).values())
    if kwargs.get("cot_prompt"):
        out.append(kwargs["cot_prompt"])
    return out


# ---------------------------------------------------------------- special layouts

def load_bbh(data_root: str | None = None, files: dict[str, str] | None = None, cot_prompt: str | None = None,
             **_metadata: Any):
    """BIG-Bench-Hard: the task file's examples as `test`; the 3 chain-of-thought shots of its
    ``cot-prompts/*.txt`` as `fewshot` rows ({input, target}), the task description on every row."""
    import datasets

    root = resolve_data_root(data_root)
    test = read_records(root / files["test"], field="examples")
    description, shots = parse_bbh_cot_prompt(root / cot_prompt)
    for row in test:
        row["description"] = description
    for row in shots:
        row["description"] = description
    return datasets.DatasetDict({"test": _to_dataset(test), "fewshot": _to_dataset(shots)})


def parse_bbh_cot_prompt(path: Path) -> tuple[str, list[dict]]:
    """A BBH cot-prompts file: a canary header up to '-----', the task description (one or more paragraphs),
    then 'Q: …\nA: Let's think step by step.\n…' shots separated by blank lines (in sports_understanding the
    reasoning follows on the same line). Parsed as lm-eval's generator parsed it for its built-in YAMLs."""
    if not path.is_file():
        raise BenchmarkFileError(f"{path}: benchmark file not found")
    body = path.read_text(encoding="utf-8").split("\n-----\n")[-1]
    description, *blocks = re.split(r"\n\n(?=Q: )", body)
    shots = []
    for block in blocks:
        m = re.match(r"Q: (.*?)\nA: Let's think step by step\.[ \n](.*)", block, re.DOTALL)
        if m is None:
            raise BenchmarkFileError(f"{path}: a shot does not read 'Q: …\\nA: Let's think step by step.\\n…'")
        shots.append({"input": m.group(1), "target": m.group(2).rstrip("\n")})
    if not shots or description.startswith("Q: "):
        raise BenchmarkFileError(f"{path}: expected a task description followed by 'Q: …' shots")
    return description.strip("\n"), shots


MBPP_SPLITS = {"prompt": (1, 10), "test": (11, 510), "validation": (511, 600), "train": (601, 974)}
MBPP_FEWSHOT_IDS = (2, 3, 4)  # lm-eval's and the MBPP paper's three prompt examples


def load_mbpp(data_root: str | None = None, files: dict[str, str] | None = None, **_metadata: Any):
    """MBPP's single file holds every split by task_id range (paper's convention); the few-shot split holds
    task 2, 3 and 4 marked ``is_fewshot`` as lm-eval's built-in task does."""
    import datasets

    root = resolve_data_root(data_root)
    rows = read_records(root / files["all"])
    out = {split: [r for r in rows if lo <= int(r["task_id"]) <= hi] for split, (lo, hi) in MBPP_SPLITS.items()}
    # Only the few-shot rows carry `is_fewshot`: the prompt template tests whether it is defined.
    out["fewshot"] = [dict(r, is_fewshot=True) for i in MBPP_FEWSHOT_IDS for r in rows if int(r["task_id"]) == i]
    return datasets.DatasetDict({k: _to_dataset(v) for k, v in out.items()})


# ---------------------------------------------------------------- original layouts → hub layouts
# One function per source layout, applied to every row once at load time (``dataset_kwargs.layout``). lm-eval
# re-runs a task's process_docs each time it reads its documents, so converting here is much cheaper.

def arc_row(doc: dict) -> dict:
    """AI2 ARC jsonl ({id, question: {stem, choices: [{text, label}]}, answerKey}) → allenai/ai2_arc rows."""
    choices = doc["question"]["choices"]
    return {"id": doc["id"], "question": doc["question"]["stem"],
            "choices": {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]},
            "answerKey": doc["answerKey"]}


def _boolish(value) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return 1
    if text in ("false", "0", "no"):
        return 0
    raise BenchmarkFileError(f"BoolQ label {value!r}: expected true/false")


def boolq_row(doc: dict) -> dict:
    """SuperGLUE BoolQ jsonl ({question, passage, idx, label: true/false}) → aps/super_glue rows (label 0/1)."""
    return {"question": doc["question"], "passage": doc["passage"], "idx": int(doc["idx"]),
            "label": _boolish(doc["label"])}


def hellaswag_row(doc: dict) -> dict:
    """The data root's HellaSwag export ({query, endings, label}; text already cleaned the way lm-eval's
    ``preprocess`` does) → the {query, choices, gold} rows lm-eval's hellaswag task scores."""
    return {"query": doc["query"], "choices": list(doc["endings"]), "gold": int(doc["label"]),
            "label": str(doc["label"]), "activity_label": doc["activity_label"], "ctx": doc["ctx"]}


def openbookqa_llmfoundry_row(doc: dict) -> dict:
    """llm-foundry OpenBookQA ({query, choices, gold}) → allenai/openbookqa rows (query = question_stem)."""
    return {"question_stem": doc["query"],
            "choices": {"text": list(doc["choices"]), "label": list("ABCD"[:len(doc["choices"])])},
            "answerKey": "ABCD"[int(doc["gold"])]}


def piqa_llmfoundry_row(doc: dict) -> dict:
    """llm-foundry PIQA ({query: 'Question: GOAL\\n', choices, gold}) → PIQA rows {goal, sol1, sol2, label}."""
    query = doc["query"]
    if not query.startswith("Question: "):
        raise BenchmarkFileError(f"PIQA query {query[:40]!r}: expected 'Question: …'")
    sol1, sol2 = doc["choices"]
    return {"goal": query[len("Question: "):].removesuffix("\n"), "sol1": sol1, "sol2": sol2,
            "label": int(doc["gold"])}


def winogrande_llmfoundry_row(doc: dict) -> dict:
    """llm-foundry Winogrande ({context_options, continuation, gold}): the two sentence starts (the blank filled
    with each option), the rest of the sentence and the answer, which is what lm-eval's winogrande task builds
    from a hub row."""
    return {"context_options": list(doc["context_options"]), "continuation": doc["continuation"],
            "gold": int(doc["gold"])}


def mmlu_row(doc: dict) -> dict:
    """MMLU csv ({question, choice0..3, answer: 0-based}) → cais/mmlu rows {question, choices, answer}."""
    return {"question": doc["question"], "choices": [doc[f"choice{i}"] for i in range(4)],
            "answer": int(doc["answer"])}


def cmmlu_row(doc: dict) -> dict:
    """CMMLU csv (an unnamed index column, Question, A–D, Answer letter) → haonan-li/cmmlu rows."""
    return {k: doc[k] for k in ("Question", "A", "B", "C", "D", "Answer")}


def ceval_row(doc: dict) -> dict:
    """C-Eval csv (id, question, A–D, answer[, explanation]) → ceval/ceval-exam rows."""
    return {"id": int(doc["id"]), "question": doc["question"], "A": doc["A"], "B": doc["B"], "C": doc["C"],
            "D": doc["D"], "answer": doc["answer"], "explanation": doc.get("explanation", "")}


def sciq_mcqa_row(doc: dict) -> dict:
    """SciQ test re-laid-out as {question, context, A–D shuffled, answer letter} → allenai/sciq rows.

    The file keeps which option is correct but not which distractor was distractor1/2/3, so the distractors
    keep their letter order. lm-eval's sciq scores the argmax of per-choice log-likelihoods, which does not
    depend on the choices' order (only an exact tie could differ).
    """
    letters = ["A", "B", "C", "D"]
    correct = letters.index(doc["answer"].strip())
    distractors = [doc[x] for i, x in enumerate(letters) if i != correct]
    return {"question": doc["question"], "support": doc["context"] or "", "correct_answer": doc[letters[correct]],
            "distractor1": distractors[0], "distractor2": distractors[1], "distractor3": distractors[2]}


def math_llmfoundry_row(doc: dict) -> dict:
    """llm-foundry MATH ({context, chain_of_thought, answer, category}) → lm-eval minerva_math docs.

    The hub rows' {problem, solution} are llm-foundry's {context, chain_of_thought}; the gold answer is
    computed from the solution's \\boxed{} with lm-eval's own minerva_math functions, as its process_docs does.
    """
    from lm_eval.tasks.minerva_math import utils as minerva

    solution = doc["chain_of_thought"]
    answer = minerva.normalize_final_answer(minerva.remove_boxed(minerva.last_boxed_only_string(solution)))
    return {"problem": doc["context"], "solution": solution, "answer": answer}


XNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}  # facebook/xnli's ClassLabel order


def xnli_tsv_row(doc: dict) -> dict:
    """XNLI task-data TSV ({text_a, text_b, label: entailment/neutral/contradiction}) → facebook/xnli rows
    {premise, hypothesis, label: 0/1/2}."""
    label = doc["label"].strip()
    if label not in XNLI_LABELS:
        raise ValueError(f"XNLI label {label!r}: expected one of {', '.join(XNLI_LABELS)}")
    return {"premise": doc["text_a"], "hypothesis": doc["text_b"], "label": XNLI_LABELS[label]}


def okapi_arc_row(doc: dict) -> dict:
    """Okapi m_arc JSON ({id, answer, instruction, option_a..option_d[, option_e]}) → alexandrainst/m_arc rows:
    every row gets all five option columns, an absent option as "" (lm-eval's process_docs drops empty ones)."""
    out = {"id": doc["id"], "answer": doc["answer"], "instruction": doc["instruction"]}
    for letter in "abcde":
        out[f"option_{letter}"] = doc.get(f"option_{letter}") or ""
    return out


TRIVIAQA_PREFIX, TRIVIAQA_SUFFIX = "Question: ", "\nAnswer:"


def triviaqa_llmfoundry_row(doc: dict) -> dict:
    """llm-foundry TriviaQA ({context: 'Question: Q\\nAnswer:', answer, aliases}) → mandarjoshi/trivia_qa rows
    {question, answer: {value, aliases}} (the fields lm-eval's triviaqa reads)."""
    context = doc["context"]
    if not (context.startswith(TRIVIAQA_PREFIX) and context.endswith(TRIVIAQA_SUFFIX)):
        raise ValueError(f"TriviaQA context {context[:40]!r}: expected 'Question: …\\nAnswer:'")
    question = context[len(TRIVIAQA_PREFIX):-len(TRIVIAQA_SUFFIX)]
    return {"question": question, "answer": {"value": doc["answer"], "aliases": list(doc["aliases"])}}


LAYOUTS = {"arc": arc_row, "boolq": boolq_row, "hellaswag": hellaswag_row,
           "openbookqa_llmfoundry": openbookqa_llmfoundry_row, "piqa_llmfoundry": piqa_llmfoundry_row,
           "winogrande_llmfoundry": winogrande_llmfoundry_row, "mmlu": mmlu_row, "cmmlu": cmmlu_row,
           "ceval": ceval_row, "sciq_mcqa": sciq_mcqa_row, "math_llmfoundry": math_llmfoundry_row,
           "xnli_tsv": xnli_tsv_row, "okapi_arc": okapi_arc_row, "triviaqa_llmfoundry": triviaqa_llmfoundry_row}
