"""HotpotQA and FEVER as ReAct episodes: the questions, the passage-store coverage, the prompt format, EM.

Question sets (``subset``):

* ``react`` (default) – ReAct's own picks, exactly: its notebooks (hotpotqa.ipynb, FEVER.ipynb) shuffle the
  indices 0–7404 with ``random.Random(233)`` and run the first 500, as ``env.reset(idx)`` into the files its
  wrappers read – ``data/hotpot_dev_v1_simplified.json`` (7,405 HotpotQA dev questions) and
  ``data/paper_dev.jsonl`` (FEVER; the same 7,405-index shuffle, so only its first 7,405 claims can be
  drawn). The data kit holds both files as ReAct's repository has them, so the same questions come in the same
  order (the first FEVER picks, 3687, 6238, 5388, …, and the 500th, 4082, are those printed in FEVER.ipynb).
  What the kit cannot reproduce is ReAct's *environment*: its ``search[]`` read live Wikipedia (2022) through
  its API, while ours reads the offline passage store, which holds the gold pages of only some of these
  questions; results on them come with that covered count (and EM on the covered ones).
* ``covered`` – easier, and not Table 4's questions: only questions whose gold pages are all in the store:
  HotpotQA's 500-question distractor sample (every gold title present); for FEVER, claims of ReAct's order with
  one complete evidence set in the store (every evidence sentence, for the store's partial FEVER pages), plus
  NOT ENOUGH INFO claims (no evidence by design), in the same order. The scripted oracle uses it.

The metric is ReAct's: exact match after SQuAD normalisation (lower case, punctuation and articles removed,
whitespace collapsed); HotpotQA also gets ReAct's token F1.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ...errors import XmodelError
from .actions import first_line
from .loop import Episode, Request, Step
from .wiki import OfflineWikipedia, WikiEnv, WikiTool, fever_title

REACT_DEV_SIZE = 7405
REACT_SEED = 233
REACT_PICKS = 500  # ReAct's notebooks run idxs[:500]
# ReAct's instruction for HotpotQA (hotpotqa.ipynb), kept verbatim so prompts match the reference runs.
HOTPOT_INSTRUCTION = (
    "Solve a question answering task with interleaving Thought, Action, Observation steps. Thought can reason "
    "about the current situation, and Action can be three types: \n"
    "(1) Search[entity], which searches the exact entity on Wikipedia and returns the first paragraph if it "
    "exists. If not, it will return some similar entities to search.\n"
    "(2) Lookup[keyword], which returns the next sentence containing keyword in the current passage.\n"
    "(3) Finish[answer], which returns the answer and finishes the task.\n"
    "Here are some examples.\n")
PROMPTS = {"hotpotqa": ("prompts_naive.json", "webthink_simple6"), "fever": ("fever.json", "webthink_simple3")}
FEVER_LABELS = ("SUPPORTS", "REFUTES", "NOT ENOUGH INFO")
# The question sets, in words (tables, settings and help texts).
SUBSETS = {
    "react": "ReAct's picks: dev indices 0-7404 shuffled with random.Random(233), the first n (ReAct ran 500), "
             "as Table 4 was measured; most of their gold pages are not in the offline store",
    "covered": "easier: only questions whose gold pages are all in the offline store; not Table 4's questions",
}


def normalize_answer(s: str) -> str:
    """SQuAD's answer normalisation, as ReAct scores with it."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, gold: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(gold)


def f1_score(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if (pred in ("yes", "no", "noanswer") or ref in ("yes", "no", "noanswer")) and pred != ref:
        return 0.0
    common = Counter(pred.split()) & Counter(ref.split())
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred.split()), same / len(ref.split())
    return 2 * precision * recall / (precision + recall)


@dataclass
class QAItem:
    task: str                  # hotpotqa | fever
    uid: str
    question: str              # the question or claim
    answer: str                # gold answer or label
    gold_titles: list[str] | None = None   # the pages an oracle searches (None: unknown)
    covered: bool | None = None            # all gold pages in the store (None: unknown, or NEI)
    kind: str = ""                         # HotpotQA type (bridge/comparison) or FEVER label


def react_indices(n: int | None) -> list[int]:
    idxs = list(range(REACT_DEV_SIZE))
    random.Random(REACT_SEED).shuffle(idxs)
    return idxs if n is None else idxs[:n]


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise XmodelError(f"{path}: not found (is the data root right?)")
    out = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise XmodelError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
    return out


def react_dir(data_root: Path) -> Path:
    return Path(data_root) / "eval" / "react"


def load_prompt(data_root: Path, task: str) -> str:
    file, key = PROMPTS[task]
    path = react_dir(data_root) / "prompts" / file
    if not path.is_file():
        raise XmodelError(f"{path}: ReAct prompt file not found")
    try:
        prompt = json.loads(path.read_text(encoding="utf-8"))[key]
    except (json.JSONDecodeError, KeyError):
        raise XmodelError(f"{path}: no prompt {key!r} in it") from None
    return HOTPOT_INSTRUCTION + prompt if task == "hotpotqa" else prompt


def _gold_titles_by_question(data_root: Path) -> dict[str, list[str]]:
    """Question text → supporting titles, from the two HotpotQA samples that carry them."""
    out: dict[str, list[str]] = {}
    for name in ("hotpot_dev_distractor_sample.jsonl", "hotpot_dev_fullwiki_sample.jsonl"):
        path = react_dir(data_root) / name
        if path.is_file():
            for rec in _read_jsonl(path):
                out.setdefault(rec["question"], list(dict.fromkeys(t for t, _ in rec["supporting_facts"])))
    return out


def load_hotpotqa(data_root: Path, wiki: OfflineWikipedia, subset: str = "covered",
                  n: int | None = None) -> list[QAItem]:
    root = react_dir(data_root)
    if subset == "covered":
        items = []
        for rec in _read_jsonl(root / "hotpot_dev_distractor_sample.jsonl")[:n]:
            titles = list(dict.fromkeys(t for t, _ in rec["supporting_facts"]))
            items.append(QAItem("hotpotqa", rec["_id"], rec["question"], rec["answer"], titles,
                                all(t in wiki for t in titles), rec.get("type") or ""))
        return items
    if subset != "react":
        raise XmodelError(f"subset {subset!r}: expected covered or react")
    path = root / "data" / "hotpot_dev_v1_simplified.json"
    if not path.is_file():
        raise XmodelError(f"{path}: not found (is the data root right?)")
    data = json.loads(path.read_text(encoding="utf-8"))
    known = _gold_titles_by_question(data_root)
    items = []
    for i in react_indices(REACT_PICKS if n is None else n):
        rec = data[i]
        titles = known.get(rec["question"])
        covered = None if titles is None else all(t in wiki for t in titles)
        items.append(QAItem("hotpotqa", f"dev-{i}", rec["question"], rec["answer"], titles, covered,
                            rec.get("type", "")))
    return items


def fever_evidence_sets(rec: dict) -> list[list[tuple[str, int | None]]]:
    """Each evidence set of a FEVER claim as its (page title, line) pairs (none for NEI)."""
    sets = []
    for group in rec.get("evidence") or []:
        pairs = [(fever_title(e[2]), e[3] if len(e) > 3 else None) for e in group if len(e) > 2 and e[2]]
        if pairs:
            sets.append(pairs)
    return sets


def evidence_in_store(pairs: list[tuple[str, int | None]], wiki: OfflineWikipedia) -> bool:
    """Every (page, line) of an evidence set is in the store (line-level for the partial FEVER pages)."""
    return all((page := wiki.get(title)) is not None and page.has_line(line) for title, line in pairs)


def load_fever(data_root: Path, wiki: OfflineWikipedia, subset: str = "covered", n: int | None = None
               ) -> list[QAItem]:
    if subset not in ("covered", "react"):
        raise XmodelError(f"subset {subset!r}: expected covered or react")
    data = _read_jsonl(react_dir(data_root) / "data" / "paper_dev.jsonl")
    if subset == "react" and n is None:
        n = REACT_PICKS
    items = []
    for i in react_indices(None):
        rec = data[i]
        sets = fever_evidence_sets(rec)
        complete = [s for s in sets if evidence_in_store(s, wiki)]
        if rec["label"] == "NOT ENOUGH INFO":
            titles, covered = [], None
        else:
            chosen = complete[0] if complete else (sets[0] if sets else [])
            titles, covered = list(dict.fromkeys(t for t, _ in chosen)), bool(complete)
        if subset == "covered" and covered is False:
            continue
        items.append(QAItem("fever", str(rec["id"]), rec["claim"], rec["label"], titles, covered, rec["label"]))
        if n is not None and len(items) >= n:
            break
    return items


@dataclass
class WikiQAEpisode(Episode):
    """ReAct's HotpotQA/FEVER episode: ``Thought i:`` … ``Action i:`` … ``Observation i:``, up to 7 steps."""

    item: QAItem | None = None
    tool: WikiTool | None = None
    env: WikiEnv | None = None
    pending_thought: str | None = None   # set when the completion had no "Action i:" (ReAct's second call)
    pending_raw: str = ""
    retrieval_seconds: float = 0.0       # time inside the wiki tool (search/get), part of env_seconds

    def start(self) -> None:
        self.task, self.uid = self.item.task, self.item.uid
        self.env = WikiEnv(self.tool)
        label = "Question" if self.item.task == "hotpotqa" else "Claim"
        self.text = f"{label}: {self.item.question}\n"

    @property
    def index(self) -> int:
        return len(self.steps) + 1

    def request(self) -> Request:
        i = self.index
        if self.pending_thought is not None:
            return Request(self.prefix, self.text + f"Thought {i}: {self.pending_thought}\nAction {i}:", ["\n"],
                           self)
        return Request(self.prefix, self.text + f"Thought {i}:", [f"\nObservation {i}:"], self)

    def receive(self, completion: str) -> None:
        i = self.index
        if self.pending_thought is not None:
            thought, action, raws = self.pending_thought, completion.strip(), [self.pending_raw, completion]
            self.pending_thought = None
        else:
            marker = f"\nAction {i}:"
            body = completion.strip()
            if marker not in body:
                # ReAct: keep the first line as the thought and ask for the action on its own.
                self.bad_calls += 1
                self.pending_thought = body.split("\n")[0].strip()
                self.pending_raw = completion
                return
            thought, action = body.split(marker, 1)
            thought, action, raws = thought.strip(), action.strip(), [completion]
        action_line = first_line(action)
        start_tool = self.env.tool_seconds
        observation = " ".join(self.env.step(action).split())
        self.retrieval_seconds += self.env.tool_seconds - start_tool
        self.text += f"Thought {i}: {thought}\nAction {i}: {action_line}\nObservation {i}: {observation}\n"
        self.steps.append(Step(thought, action_line, observation, raws))
        if self.env.done:
            self.finish("finished")
        self.after_step()
        if self.done and self.env.answer is None:
            self.env.answer = ""   # ReAct sends finish[] when the steps run out

    def scores(self) -> dict:
        answer = self.env.answer if self.env and self.env.answer is not None else ""
        out = {"em": float(exact_match(answer, self.item.answer))}
        if self.item.task == "hotpotqa":
            out["f1"] = f1_score(answer, self.item.answer)
        return out

    def details(self) -> dict:
        return {"question": self.item.question, "gold": self.item.answer,
                "prediction": self.env.answer if self.env else None, "covered": self.item.covered,
                "gold_titles": self.item.gold_titles, "kind": self.item.kind,
                "pages_seen": self.env.pages_seen if self.env else [],
                "retrieval_seconds": round(self.retrieval_seconds, 5)}

    def oracle_completion(self) -> str:
        """Search each gold page in turn, then finish with the gold answer (written as a model would)."""
        i, searched, titles = self.index, len(self.steps), self.item.gold_titles or []
        if searched < len(titles):
            thought, action = f"I need to search {titles[searched]}.", f"Search[{titles[searched]}]"
        else:
            thought, action = f"So the answer is {self.item.answer}.", f"Finish[{self.item.answer}]"
        if self.pending_thought is not None:  # only reached if a caller mixes policies
            return f" {action}"
        return f" {thought}\nAction {i}: {action}"


def make_episodes(items: list[QAItem], prefix: str, tool: WikiTool, max_steps: int = 7,
                  repeat_limit: int = 5) -> list[WikiQAEpisode]:
    return [WikiQAEpisode(prefix=prefix, item=it, tool=tool, max_steps=max_steps, repeat_limit=repeat_limit)
            for it in items]


def coverage_summary(items: list[QAItem]) -> dict:
    covered = sum(1 for it in items if it.covered is True)
    uncovered = sum(1 for it in items if it.covered is False)
    unknown = sum(1 for it in items if it.covered is None)
    return {"covered": covered, "not_covered": uncovered, "unknown_or_nei": unknown, "total": len(items)}


def retrieval_recall(items: list[QAItem], wiki: OfflineWikipedia, ks: tuple[int, ...] = (1, 5, 10)) -> dict:
    """How well ``search`` finds the gold pages, over items with known gold titles.

    * ``title_hit`` – share of gold titles that ``search[title]`` opens directly (the exact-title path);
    * ``recall@k`` – share of gold titles among the top k BM25 titles when the question/claim itself is the
      query (``recall@5`` = the gold page is in the ``Similar: […]`` list a failed search would show);
    * ``all@k`` – share of questions with *every* gold title in the top k.
    """
    with_gold = [it for it in items if it.gold_titles]
    total = sum(len(it.gold_titles) for it in with_gold)
    if not total:
        return {"questions": 0, "gold_titles": 0}
    hits = sum(wiki.get(t) is not None for it in with_gold for t in it.gold_titles)
    out = {"questions": len(with_gold), "gold_titles": total, "title_hit": hits / total}
    top = max(ks)
    ranked = [[t.casefold() for t in wiki.similar(it.question, top)] for it in with_gold]
    for k in ks:
        found = [[t.casefold() in r[:k] for t in it.gold_titles] for it, r in zip(with_gold, ranked)]
        out[f"recall@{k}"] = sum(map(sum, found)) / total
        out[f"all@{k}"] = sum(all(f) for f in found) / len(with_gold)
    return out
