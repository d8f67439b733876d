"""Our task YAMLs against lm-eval's built-in tasks on the same rows: identical requests (prompt, continuation or
generation settings) and identical scores from the same (deterministic, model-free) scorer.

The built-in task is lm-eval's own YAML, loaded from the installed package, with only its data source swapped
for the local rows laid out as the hub copy it expects. Documented differences: see docs/EVALUATION.md.
"""

import ast
import hashlib
import logging
import os
from pathlib import Path

import datasets
import pytest

from xmodel.eval import local_files as lf
from xmodel.eval.suites import TASKS_DIR

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
logging.getLogger("lm_eval").setLevel(logging.ERROR)


def builtin_yaml(rel: str) -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent / rel


def _fn_from_source(path: Path, name: str):
    """A function of a built-in utils.py whose module cannot be imported offline (it loads HF evaluate's
    code_eval at import time): compiled from that file's own source, alone."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    fn = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name)
    namespace: dict = {}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def builtin_task(rel: str, hub_rows: dict, offline_code_task: bool = False):
    """lm-eval's built-in task `rel` with its dataset replaced by `hub_rows` ({split: list of rows})."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    path = builtin_yaml(rel)
    cfg = load_yaml(path, resolve_func=not offline_code_task)
    if offline_code_task:
        # Only what builds requests; the metric (HF evaluate's code_eval) needs the hub.
        cfg["metric_list"] = [{"metric": "bypass"}]
        cfg.pop("filter_list", None)
        samples = (cfg.get("fewshot_config") or {}).get("samples")
        if isinstance(samples, str):
            cfg["fewshot_config"]["samples"] = _fn_from_source(path.parent / "utils.py", samples.rsplit(".", 1)[1])
    for key in ("dataset_path", "dataset_name", "tag", "group"):
        cfg.pop(key, None)
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if cfg.get(key) is not None and cfg[key] not in hub_rows:  # splits the local files do not hold
            cfg[key] = None
    # The evaluated splits are cut to their first rows (requests are compared on the first few documents); a
    # few-shot pool (GSM8K's train split) stays whole, since lm-eval samples shots from all of it.
    keep = {cfg.get("test_split"), cfg.get("validation_split")} - {None, cfg.get("fewshot_split")}
    dataset = datasets.DatasetDict({split: datasets.Dataset.from_list(rows[:200] if split in keep else rows)
                                    for split, rows in hub_rows.items()})
    cfg["custom_dataset"] = lambda **_: dataset
    return ConfigurableTask(config=cfg)


@pytest.fixture(scope="module")
def manager(data_root):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_root": str(data_root)})


def our_task(manager, name):
    (task,) = manager.load([name])["tasks"].values()
    return task


def local(data_root, rel, layout=None):
    """The file's rows, in the hub layout (the same row function our loader applies)."""
    return [lf.LAYOUTS[layout](r) if layout else r for r in lf.read_records(data_root / rel)]


def requests(task, limit):
    task.set_fewshot_seed(1234)
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return [(i.doc_id, i.idx, i.request_type, i.arguments) for i in task.instances]


class HashLM:
    """A deterministic scorer without a model: each request's log-likelihood (or generation) is a function of
    its text alone, so two tasks that send the same requests get the same scores."""

    @staticmethod
    def _h_static(*parts):
        return int(hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:8], 16)

    def __new__(cls):
        from lm_eval.api.model import LM

        class _HashLM(LM):
            _h = staticmethod(HashLM._h_static)

            def loglikelihood(self, reqs, disable_tqdm=False):
                return [(-(self._h(*r.args) % 1000) / 100.0, False) for r in reqs]

            def loglikelihood_rolling(self, reqs, disable_tqdm=False):
                return [-(self._h(r.args[0]) % 1000) / 100.0 for r in reqs]

            def generate_until(self, reqs, disable_tqdm=False):
                return [f"So the answer is ({'ABC'[self._h(r.args[0]) % 3]}).\n#### {self._h(r.args[0]) % 20}"
                        for r in reqs]

        return _HashLM()


def scores(task, limit):
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    # An empty task manager: the task is given as an object (a default one would index every built-in YAML).
    empty = TaskManager(include_path=str(TASKS_DIR / "code"), include_defaults=False)
    res = simple_evaluate(model=HashLM(), tasks=[task], task_manager=empty, limit=limit, bootstrap_iters=0,
                          random_seed=1234,
                          fewshot_random_seed=1234, log_samples=False)
    (row,) = res["results"].values()
    return {k: v for k, v in row.items() if "," in k and "stderr" not in k}


def winogrande_hub_rows(docs):
    """The hub layout (sentence with '_', option1/2, answer) rebuilt from llm-foundry's partial sentences."""
    out = []
    for d in docs:
        a, b = d["context_options"]
        common = os.path.commonprefix([a, b])
        cut = common.rfind(" ") + 1 if " " in common else len(common)
        prefix = a[:cut]
        out.append({"sentence": f"{prefix}_ {d['continuation']}", "option1": a[cut:], "option2": b[cut:],
                    "answer": str(d["gold"] + 1)})
    return out


def hub_rows_for(name, data_root):
    """{split: rows in the hub layout the built-in task reads}, from the data root's files."""
    if name == "arc_easy":
        return {"test": local(data_root, "eval/arc/ARC-Easy-Test.jsonl", "arc")}
    if name == "arc_challenge":
        return {"test": local(data_root, "eval/arc/ARC-Challenge-Test.jsonl", "arc")}
    if name == "boolq":
        return {"validation": local(data_root, "eval/boolq/val.jsonl", "boolq")}
    if name == "hellaswag":
        docs = lf.read_records(data_root / "eval/hellaswag/hellaswag_val.preprocessed.jsonl.gz")
        return {"validation": [{"activity_label": d["activity_label"], "ctx_a": d["ctx"], "ctx_b": "",
                                "endings": d["endings"], "label": str(d["label"])} for d in docs]}
    if name == "openbookqa":
        return {"test": local(data_root, "eval/openbookqa/test.llmfoundry.jsonl",
                               "openbookqa_llmfoundry")}
    if name == "piqa":
        return {"validation": local(data_root, "eval/piqa/valid.llmfoundry.jsonl", "piqa_llmfoundry")}
    if name == "winogrande":
        docs = lf.read_records(data_root / "eval/winogrande/dev_1.1.llmfoundry.jsonl")
        return {"validation": winogrande_hub_rows(docs)}
    if name == "gsm8k":
        return {"test": lf.read_records(data_root / "eval/gsm8k/test.jsonl"),
                "train": lf.read_records(data_root / "sft/math/gsm8k_train.jsonl")}
    if name == "xcopa_zh":  # the official files are the hub rows
        return {"test": lf.read_records(data_root / "eval/xcopa/test.zh.jsonl"),
                "validation": lf.read_records(data_root / "eval/xcopa/val.zh.jsonl")}
    if name == "xnli_zh":
        return {"validation": local(data_root, "eval/xnli/zh/dev.tsv", "xnli_tsv")}
    if name == "arc_zh":
        return {split: local(data_root, f"eval/arc_zh/zh_{split}.json", "okapi_arc")
                for split in ("test", "validation", "train")}
    raise KeyError(name)


SINGLE = [
    ("arc_easy", "arc/arc_easy.yaml", "xmodel_arc_easy", 30),
    ("arc_challenge", "arc/arc_challenge.yaml", "xmodel_arc_challenge", 30),
    ("boolq", "super_glue/boolq/default.yaml", "xmodel_boolq", 30),
    ("hellaswag", "hellaswag/hellaswag.yaml", "xmodel_hellaswag", 100),
    ("openbookqa", "openbookqa/openbookqa.yaml", "xmodel_openbookqa", 30),
    ("piqa", "piqa/piqa.yaml", "xmodel_piqa", 30),
    ("winogrande", "winogrande/default.yaml", "xmodel_winogrande", 100),
    ("gsm8k", "gsm8k/gsm8k.yaml", "xmodel_gsm8k", 8),
    # Xmodel-LM's Chinese table: lm-eval's xcopa_zh, xnli_zh and okapi arc_zh on the data kit's files.
    ("xcopa_zh", "xcopa/default_zh.yaml", "xmodel_xcopa_zh", 100),
    ("xnli_zh", "xnli/xnli_zh.yaml", "xmodel_xnli_zh", 100),
    ("arc_zh", "okapi/arc_multilingual/arc_zh.yaml", "xmodel_arc_zh", 100),
]


@pytest.mark.parametrize("name,rel,ours,limit", SINGLE, ids=[s[0] for s in SINGLE])
def test_same_requests_and_scores_as_builtin(manager, data_root, name, rel, ours, limit):
    builtin = builtin_task(rel, hub_rows_for(name, data_root))
    mine = our_task(manager, ours)
    assert requests(mine, limit) == requests(builtin, limit)
    assert scores(mine, limit) == scores(builtin, limit)


@pytest.mark.parametrize("subject", ["anatomy", "high_school_mathematics", "world_religions"])
def test_mmlu_subject_matches_builtin(manager, data_root, subject):
    def hub(split):
        docs = local(data_root, f"eval/mmlu/{split}/{subject}_{split}.csv", "mmlu")
        return [dict(d, subject=subject) for d in docs]

    builtin = builtin_task(f"mmlu/default/mmlu_{subject}.yaml", {"test": hub("test"), "dev": hub("dev")})
    mine = our_task(manager, f"xmodel_mmlu_{subject}")
    assert requests(mine, 20) == requests(builtin, 20)
    assert scores(mine, 20) == scores(builtin, 20)


@pytest.mark.parametrize("subject", ["agronomy", "chinese_history"])
def test_cmmlu_subject_matches_builtin(manager, data_root, subject):
    hub = {split: local(data_root, f"eval/cmmlu/{split}/{subject}.csv", "cmmlu")
           for split in ("test", "dev")}
    builtin = builtin_task(f"cmmlu/cmmlu_{subject}.yaml", hub)
    mine = our_task(manager, f"xmodel_cmmlu_{subject}")
    assert requests(mine, 20) == requests(builtin, 20)
    assert scores(mine, 20) == scores(builtin, 20)


@pytest.mark.parametrize("subject", ["boolean_expressions", "snarks", "sports_understanding", "dyck_languages"])
def test_bbh_subject_matches_builtin(manager, data_root, subject):
    test = lf.read_records(data_root / f"eval/bbh/bbh/{subject}.json", field="examples")
    builtin = builtin_task(f"bbh/cot_fewshot/{subject}.yaml", {"test": test})
    mine = our_task(manager, f"xmodel_bbh_{subject}")
    assert requests(mine, 5) == requests(builtin, 5)
    assert scores(mine, 5) == scores(builtin, 5)


@pytest.mark.parametrize("short,category", [("algebra", "algebra"), ("num_theory", "number_theory")])
def test_math_subject_matches_builtin(manager, data_root, short, category):
    docs = [d for d in lf.read_records(data_root / "eval/math/test.llmfoundry.jsonl") if d["category"] == category]
    hub = {"test": [{"problem": d["context"], "solution": d["chain_of_thought"]} for d in docs]}
    builtin = builtin_task(f"minerva_math/minerva_math_{short}.yaml", hub)
    mine = our_task(manager, f"xmodel_math_{short}")
    assert requests(mine, 5) == requests(builtin, 5)
    assert scores(mine, 5) == scores(builtin, 5)


class AliasLM:
    """A scorer for TriviaQA without a model: for about half of the questions (a hash of the prompt decides) it
    answers with one of the gold aliases — in another case and with a trailing period, which the task's
    filters and metric must forgive — and otherwise with a wrong answer."""

    def __new__(cls):
        from lm_eval.api.model import LM

        class _AliasLM(LM):
            def loglikelihood(self, reqs, disable_tqdm=False):
                raise NotImplementedError

            def loglikelihood_rolling(self, reqs, disable_tqdm=False):
                raise NotImplementedError

            def generate_until(self, reqs, disable_tqdm=False):
                out = []
                for r in reqs:
                    h = HashLM._h_static(r.args[0])
                    aliases = r.doc["answer"]["aliases"]
                    out.append(f" {aliases[h % len(aliases)].upper()}" if h % 2 else " Napoleon Bonaparte")
                return out

        return _AliasLM()


def test_triviaqa_matches_builtin_on_the_sample(manager, data_root):
    """lm-eval's triviaqa on the kit's 3,000-question sample: same prompts, generation settings, filters and
    exact-match scores (including matches on aliases) as the built-in task on the same rows in its hub layout."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    rows = local(data_root, "eval/triviaqa/triviaqa_sm_sub.llmfoundry.jsonl", "triviaqa_llmfoundry")
    assert len(rows) == 3000 and rows[0]["question"].endswith("?")
    builtin = builtin_task("triviaqa/default.yaml", {"validation": rows})
    mine = our_task(manager, "xmodel_triviaqa")
    assert requests(mine, 50) == requests(builtin, 50)
    empty = TaskManager(include_path=str(TASKS_DIR / "code"), include_defaults=False)
    got = []
    for task in (mine, builtin):
        res = simple_evaluate(model=AliasLM(), tasks=[task], task_manager=empty, limit=200, bootstrap_iters=0,
                              random_seed=1234, log_samples=False)
        (row,) = res["results"].values()
        got.append(row["exact_match,remove_whitespace"])
    assert got[0] == got[1] and 0.3 < got[0] < 0.7


def test_humaneval_lmeval_prompts_match_builtin(manager, data_root):
    hub = {"test": lf.read_records(data_root / "eval/humaneval/HumanEval.jsonl.gz")}
    builtin = builtin_task("humaneval/humaneval.yaml", hub, offline_code_task=True)
    assert requests(our_task(manager, "xmodel_humaneval_lmeval"), 20) == requests(builtin, 20)


def test_mbpp_lmeval_prompts_match_builtin(manager, data_root):
    all_rows = lf.read_records(data_root / "eval/mbpp/mbpp.jsonl")
    hub = {"test": [r for r in all_rows if 11 <= r["task_id"] <= 510]}
    builtin = builtin_task("mbpp/mbpp.yaml", hub, offline_code_task=True)
    mine = requests(our_task(manager, "xmodel_mbpp_lmeval"), 5)
    assert mine == requests(builtin, 5)
    # The three shots are tasks 2, 3, 4 ending in [DONE], then the problem's own prompt.
    context = mine[0][3][0]
    assert context.count("[DONE]") == 3 and context.endswith("[BEGIN]\n")


def test_all_27_bbh_descriptions_and_shots_match_builtin(data_root):
    """The cot-prompts files parse to exactly the description and 3 shots lm-eval's generator wrote inline."""
    import yaml

    subjects = sorted(p for p in builtin_yaml("bbh/cot_fewshot").glob("*.yaml") if not p.name.startswith("_"))
    assert len(subjects) == 27
    for path in subjects:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        description, shots = lf.parse_bbh_cot_prompt(data_root / f"eval/bbh/cot-prompts/{cfg['dataset_name']}.txt")
        assert description + "\n\n" == cfg["description"], path.name
        assert shots == cfg["fewshot_config"]["samples"], path.name
