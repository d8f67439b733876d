"""HumanEval and MBPP as Xmodel-2's Table 3 measured them (bigcode-evaluation-harness), checked against that
harness's protocol as written here from its source (bigcode_eval/tasks/humaneval.py, mbpp.py), not against our
own code: the prompts byte for byte, where generations stop (with a model whose output the test scripts), the
512-token cap on prompt + completion, the programs that run, bigcode's sampling defaults, and the samples
written by --log-samples."""

import logging
import os

import pytest
import torch

from xmodel.eval import code
from xmodel.eval import local_files as lf
from xmodel.eval.suites import TASKS_DIR

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
logging.getLogger("lm_eval").setLevel(logging.ERROR)

# bigcode-evaluation-harness, as its tasks define them.
BIGCODE_HUMANEVAL_STOPS = ["\nclass", "\ndef", "\n#", "\n@", "\nprint", "\nif", "\n```"]
BIGCODE_MBPP_STOPS = ["\nclass", "\nassert", '\n"""', "\nprint", "\nif", "\n<|/", "\n```"]
BIGCODE_MAX_LENGTH = 512  # --max_length_generation: prompt and completion, in tokens


def bigcode_stop_at_stop_token(decoded_string, stop_tokens):
    """bigcode's Task._stop_at_stop_token."""
    min_stop_index = len(decoded_string)
    for stop_token in stop_tokens:
        stop_index = decoded_string.find(stop_token)
        if stop_index != -1 and stop_index < min_stop_index:
            min_stop_index = stop_index
    return decoded_string[:min_stop_index]


@pytest.fixture(scope="module")
def manager(data_root):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_root": str(data_root)})


def load_task(manager, name):
    (task,) = manager.load([name])["tasks"].values()
    return task


def build_requests(task, limit):
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return task.instances


def test_mbpp_prompt_of_the_first_test_problem_is_bigcodes(manager):
    (inst,) = build_requests(load_task(manager, "xmodel_mbpp"), 1)
    assert inst.doc["task_id"] == 11
    context, gen_kwargs = inst.arguments
    # bigcode's MBPP prompt: f'"""\n{description}\n{test_example}\n"""\n', written out for task 11.
    expected = ('"""\n'
                'Write a python function to remove first and last occurrence of a given character from the string.\n'
                'assert remove_Occ("hello","l") == "heo"\n'
                '"""\n')
    assert context == expected
    assert context.encode("utf-8") == expected.encode("utf-8")
    assert gen_kwargs["until"] == BIGCODE_MBPP_STOPS and gen_kwargs["do_sample"] is False
    assert gen_kwargs["xmodel_max_length"] == BIGCODE_MAX_LENGTH


def test_mbpp_runs_the_500_test_problems_zero_shot(manager):
    task = load_task(manager, "xmodel_mbpp")
    ids = [d["task_id"] for d in task.eval_docs]
    assert ids == list(range(11, 511))
    instances = build_requests(task, 500)
    assert all(i.arguments[0] == code.mbpp_bigcode_prompt(i.doc) for i in instances)
    assert not any("[BEGIN]" in i.arguments[0] for i in instances)


def test_humaneval_prompt_is_the_stripped_prompt(manager, data_root):
    problems = lf.read_records(data_root / "eval/humaneval/HumanEval.jsonl.gz")
    instances = build_requests(load_task(manager, "xmodel_humaneval"), 164)
    assert len(instances) == 164
    for inst, doc in zip(instances, problems):
        context, gen_kwargs = inst.arguments
        assert context == doc["prompt"].strip() and not context.endswith("\n")  # bigcode: doc["prompt"].strip()
        assert gen_kwargs["until"] == BIGCODE_HUMANEVAL_STOPS and gen_kwargs["do_sample"] is False


@pytest.fixture(scope="module")
def scripted_lm(nano_model_dir):
    """Our lm-eval model (HFLM with the bigcode length cap) around the nano model, whose `generate` is
    replaced by a script: for each prompt it returns the tokens of a continuation the test chose."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xmodel.eval.harness import build_lm

    model = AutoModelForCausalLM.from_pretrained(nano_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(nano_model_dir)
    lm = build_lm(model, tokenizer, batch_size=2, max_length=2048)
    script: dict[str, str] = {}

    def generate(input_ids, attention_mask=None, max_length=None, pad_token_id=None, **_):
        rows = []
        for ids, mask in zip(input_ids, attention_mask):
            prompt = tokenizer.decode(ids[mask.bool()].tolist())
            cont = tokenizer(script[prompt], add_special_tokens=False)["input_ids"]
            rows.append(ids.tolist() + cont[:max_length - len(ids)])
        width = max(len(r) for r in rows)
        return torch.tensor([r + [pad_token_id] * (width - len(r)) for r in rows])

    lm.model.generate = generate
    lm.script = script
    return lm


def run_scripted(lm, task, continuations):
    """The responses lm-eval's generate_until returns for the task's first len(continuations) requests, each
    prompt answered with its continuation."""
    instances = build_requests(task, len(continuations))
    for inst, cont in zip(instances, continuations):
        lm.script[inst.arguments[0]] = cont
    return instances, lm.generate_until(instances, disable_tqdm=True)


HUMANEVAL_CONTINUATIONS = [
    "\n    return True\n\ndef helper():\n    pass\n",
    "\n    x = 1\n@decorator\ndef f(): pass",
    "\n    return x\n```\nThat was the code.",
    "\n    for a in numbers:\n        if a:\n            return 1\n    return 0\nif __name__ == '__main__':\n    pass",
    "\n    # a comment in the body\n    return 0\n# a comment at the top\n",
    "\n    print(1)\n    return 2\nprint(3)",
    "\n    return 1\nclass A:\n    pass",
    "\n    return 1\n",
]


def test_humaneval_generations_stop_where_bigcodes_would(scripted_lm, manager):
    task = load_task(manager, "xmodel_humaneval")
    for cont in HUMANEVAL_CONTINUATIONS:
        (inst,), (response,) = run_scripted(scripted_lm, task, [cont])
        assert response == bigcode_stop_at_stop_token(cont, BIGCODE_HUMANEVAL_STOPS), cont
    # lm-eval's own humaneval stops at fewer sequences: a decorator or a closing code fence runs on.
    lmeval = load_task(manager, "xmodel_humaneval_lmeval")
    (_,), (response,) = run_scripted(scripted_lm, lmeval, [HUMANEVAL_CONTINUATIONS[1]])
    assert "@decorator" in response


def test_generation_stops_at_512_tokens_prompt_included(scripted_lm, manager):
    """Two prompts of different lengths in one batch: each may grow to 512 tokens, prompt included (bigcode's
    max_length_generation), whatever the batch's padded width."""
    tokenizer = scripted_lm.tokenizer
    task = load_task(manager, "xmodel_humaneval")
    endless = " x" * 2000  # no stop sequence anywhere
    instances, responses = run_scripted(scripted_lm, task, [endless, endless])
    prompt_lengths = [len(tokenizer(i.arguments[0], add_special_tokens=False)["input_ids"]) for i in instances]
    assert prompt_lengths[0] != prompt_lengths[1]
    ids = tokenizer(endless, add_special_tokens=False)["input_ids"]
    for n_prompt, response in zip(prompt_lengths, responses):
        assert response == tokenizer.decode(ids[:BIGCODE_MAX_LENGTH - n_prompt])


def test_mbpp_generations_stop_where_bigcodes_would(scripted_lm, manager, data_root):
    task = load_task(manager, "xmodel_mbpp")
    doc = next(r for r in lf.read_records(data_root / "eval/mbpp/mbpp.jsonl") if r["task_id"] == 11)
    conts = [doc["code"] + '\nassert remove_Occ("a","a") == ""\n', doc["code"] + '\n"""\nAnother docstring',
             doc["code"] + "\nif True:\n    pass", doc["code"] + "\n<|/ file |>"]
    for cont in conts:
        (_,), (response,) = run_scripted(scripted_lm, task, [cont])
        assert response == bigcode_stop_at_stop_token(cont, BIGCODE_MBPP_STOPS) == doc["code"]


def test_scored_programs_and_logged_samples(scripted_lm, manager, data_root):
    """End to end through lm-eval: a canonical solution followed by a stop sequence and junk passes, a wrong body
    fails; pass@1 is their mean; the samples lm-eval logs hold each prompt and response."""
    from lm_eval import simple_evaluate

    problems = lf.read_records(data_root / "eval/humaneval/HumanEval.jsonl.gz")[:2]
    scripted_lm.script[problems[0]["prompt"].strip()] = "\n" + problems[0]["canonical_solution"] + "\ndef junk(:"
    scripted_lm.script[problems[1]["prompt"].strip()] = "\n    return None\n"
    res = simple_evaluate(model=scripted_lm, tasks=[load_task(manager, "xmodel_humaneval")], task_manager=manager,
                          limit=2, bootstrap_iters=0, log_samples=True, confirm_run_unsafe_code=True)
    assert res["results"]["xmodel_humaneval"]["pass@1,none"] == 0.5
    samples = res["samples"]["xmodel_humaneval"]
    assert [s["pass@1"] for s in samples] == [1.0, 0.0]
    (prompt, gen_kwargs), = samples[0]["arguments"]
    assert prompt == problems[0]["prompt"].strip() and gen_kwargs["until"] == BIGCODE_HUMANEVAL_STOPS
    assert samples[0]["resps"] == [["\n" + problems[0]["canonical_solution"]]]


def test_bigcode_programs_of_canonical_solutions_pass(data_root):
    """The programs bigcode would run (prompt + completion + "\\n" + reference), with the canonical solutions as
    completions, pass in our sandbox; with a wrong completion they fail."""
    limits = code.SandboxLimits(timeout_s=5, memory_mb=1024)
    problems = lf.read_records(data_root / "eval/humaneval/HumanEval.jsonl.gz")[:40]
    programs = [code.humaneval_bigcode_program(d, "\n" + d["canonical_solution"]) for d in problems]
    assert programs[0] == (problems[0]["prompt"].strip() + "\n" + problems[0]["canonical_solution"] + "\n" + "\n"
                           + problems[0]["test"] + "\n" + f"check({problems[0]['entry_point']})")
    assert all(r.passed for r in code.run_programs(programs, limits, parallel=2))
    mbpp = [r for r in lf.read_records(data_root / "eval/mbpp/mbpp.jsonl") if 11 <= r["task_id"] <= 510][:60]
    programs = [code.mbpp_bigcode_program(r, r["code"]) for r in mbpp]
    assert programs[0] == code.mbpp_bigcode_prompt(mbpp[0]) + mbpp[0]["code"] + "\n" + "\n".join(mbpp[0]["test_list"])
    assert [r["task_id"] for r, res in zip(mbpp, code.run_programs(programs, limits, parallel=2))
            if not res.passed] == []
    broken = [code.mbpp_bigcode_program(r, "def nothing():\n    pass\n") for r in mbpp[:10]]
    assert not any(r.passed for r in code.run_programs(broken, limits, parallel=2))


def test_sampling_defaults_are_bigcodes():
    assert code.sampling_settings(1) == {"n": 1, "decoding": "greedy", "metric": "pass@1"}
    five = code.sampling_settings(5)
    assert (five["temperature"], five["top_p"], five["metrics"]) == (0.2, 0.95, ["pass@1", "pass@5"])
    hundred = code.sampling_settings(100)
    assert hundred["temperature"] == 0.8 and hundred["metrics"] == ["pass@1", "pass@5", "pass@10", "pass@100"]
    assert "bigcode" in hundred["temperature_from"]
    assert code.sampling_settings(10, 0.4)["temperature"] == 0.4


def test_sampled_task_uses_the_resolved_temperature():
    from xmodel.eval.harness import sampled_code_spec
    from xmodel.eval.suites import BENCHMARKS

    spec = sampled_code_spec(BENCHMARKS["humaneval"], 5, code.sampling_settings(5)["temperature"])
    assert spec["task"] == "xmodel_humaneval_sampled" and spec["repeats"] == 5
    g = spec["generation_kwargs"]
    assert (g["do_sample"], g["temperature"], g["top_p"], g["xmodel_max_length"]) == (True, 0.2, 0.95, 512)
    assert g["until"] == BIGCODE_HUMANEVAL_STOPS
