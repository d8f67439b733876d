"""Scoring checked with controlled models: one that always ranks the gold answer highest scores 100 %, one that
always picks the first choice scores the share of questions whose answer is the first choice (counted from the
raw files here, independently of the task code); GSM8K answer extraction on hand-written completions."""

import logging
import os

import pytest

from xmodel.eval import local_files as lf
from xmodel.eval.suites import TASKS_DIR

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
logging.getLogger("lm_eval").setLevel(logging.ERROR)
LIMIT = 400


@pytest.fixture(scope="module")
def manager(data_root):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_root": str(data_root)})


def controlled_lm(tasks, pick):
    """An lm-eval LM whose log-likelihood is 0 for the choice `pick(task, doc)` selects and -10 otherwise."""
    from lm_eval.api.model import LM

    class Controlled(LM):
        def loglikelihood(self, requests, disable_tqdm=False):
            out = []
            for r in requests:
                task = tasks[r.task_name]
                out.append((0.0 if r.idx == pick(task, r.doc) else -10.0, True))
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def generate_until(self, requests, disable_tqdm=False):
            raise NotImplementedError

    return Controlled()


def gold_index(task, doc):
    if task.multiple_input:  # Winogrande: the gold is which context, given by doc_to_text
        return task.doc_to_text(doc)
    gold = task.doc_to_target(doc)
    return gold if isinstance(gold, int) else task.doc_to_choice(doc).index(gold)


def evaluate(manager, names, pick):
    from lm_eval import simple_evaluate

    loaded = manager.load(names)
    lm = controlled_lm(loaded["tasks"], pick)
    res = simple_evaluate(model=lm, tasks=list(loaded["tasks"].values()), task_manager=manager, limit=LIMIT,
                          bootstrap_iters=0)
    return res["results"]


def first_choice_share(name, data_root):
    """Fraction of the first LIMIT questions whose answer is the first choice, from the raw files."""
    read = lambda rel: lf.read_records(data_root / rel)[:LIMIT]  # noqa: E731
    if name == "xmodel_arc_easy":
        rows = read("eval/arc/ARC-Easy-Test.jsonl")
        hits = [r["answerKey"] == r["question"]["choices"][0]["label"] for r in rows]
    elif name == "xmodel_arc_challenge":
        rows = read("eval/arc/ARC-Challenge-Test.jsonl")
        hits = [r["answerKey"] == r["question"]["choices"][0]["label"] for r in rows]
    elif name == "xmodel_boolq":
        hits = [str(r["label"]).lower() == "false" for r in read("eval/boolq/val.jsonl")]  # choice 0 is "no"
    elif name == "xmodel_hellaswag":
        hits = [int(r["label"]) == 0 for r in read("eval/hellaswag/hellaswag_val.preprocessed.jsonl.gz")]
    elif name == "xmodel_openbookqa":
        hits = [r["gold"] == 0 for r in read("eval/openbookqa/test.llmfoundry.jsonl")]
    elif name == "xmodel_piqa":
        hits = [r["gold"] == 0 for r in read("eval/piqa/valid.llmfoundry.jsonl")]
    elif name == "xmodel_winogrande":
        hits = [r["gold"] == 0 for r in read("eval/winogrande/dev_1.1.llmfoundry.jsonl")]
    elif name == "xmodel_mmlu_anatomy":
        hits = [int(r["answer"]) == 0 for r in read("eval/mmlu/test/anatomy_test.csv")]
    elif name == "xmodel_cmmlu_agronomy":
        hits = [r["Answer"] == "A" for r in read("eval/cmmlu/test/agronomy.csv")]
    else:
        raise KeyError(name)
    return sum(hits) / len(hits)


TASKS = ["xmodel_arc_easy", "xmodel_arc_challenge", "xmodel_boolq", "xmodel_hellaswag", "xmodel_openbookqa",
         "xmodel_piqa", "xmodel_winogrande", "xmodel_mmlu_anatomy", "xmodel_cmmlu_agronomy"]


def test_gold_picker_scores_100_percent(manager):
    results = evaluate(manager, TASKS, gold_index)
    for name in TASKS:
        assert results[name]["acc,none"] == 1.0, name


def test_first_choice_picker_scores_the_first_choice_share(manager, data_root):
    results = evaluate(manager, TASKS, lambda task, doc: 0)
    for name in TASKS:
        share = first_choice_share(name, data_root)
        assert 0 < share < 1, name
        assert results[name]["acc,none"] == pytest.approx(share), name


# (completion, strict-match, flexible-extract) for GSM8K test question 1, whose answer is 18.
GSM8K_COMPLETIONS = [
    (" Janet sells 16 - 3 - 4 = 9 eggs a day, so she makes 9 * 2 = $18.\n#### 18", 1.0, 1.0),
    (" She makes 9 * 2 = 18 dollars.\n#### 18.", 1.0, 1.0),
    (" The answer is 18.", 0.0, 1.0),
    (" 16 - 3 - 4 = 9, 9 * 2 = 18 dollars", 0.0, 1.0),
    (" First 20, then I see it is 18", 0.0, 1.0),
    (" #### $18", 0.0, 1.0),
    (" #### 1,800", 0.0, 0.0),
    (" #### 17", 0.0, 0.0),
    (" She makes 18 dollars, or 1800 cents.", 0.0, 0.0),
    (" I do not know.", 0.0, 0.0),
]


@pytest.mark.parametrize("completion,strict,flexible", GSM8K_COMPLETIONS)
def test_gsm8k_answer_extraction(manager, completion, strict, flexible):
    """lm-eval's own filters and exact_match, as configured in our gsm8k YAML, on a written completion."""
    (task,) = manager.load(["xmodel_gsm8k"])["tasks"].values()
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=1, rank=0, world_size=1)
    (inst,) = task.instances
    assert inst.doc["answer"].endswith("#### 18")
    inst.resps = [completion]
    task.apply_filters()
    got = {name: task.process_results(inst.doc, [inst.filtered_resps[name]])["exact_match"]
           for name in ("strict-match", "flexible-extract")}
    assert got == {"strict-match": strict, "flexible-extract": flexible}
