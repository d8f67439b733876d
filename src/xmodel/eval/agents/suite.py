"""The agent suite: run a model (or the scripted policies) on HotpotQA, FEVER, AlfWorld and WebShop, write
``agents.json`` plus one trace file per task, and lay results out as the Xmodel-2 report's Table 4.

Entry points for the evaluation suite and the report:

* `evaluate_agents(model, tokenizer, data_root, out_dir, settings)` → the results dict (also written to
  ``out_dir/agents.json``);
* `table4_rows(results)` → header, rows (published first, then ours) and the indices of our rows;
  `table4_markdown(results)` renders them; `summary_markdown(result)` is one run's per-task detail.
"""

from __future__ import annotations

import datetime
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from ..results import read_results_file, write_json
from .loop import Policy, RunStats, ScriptedPolicy, run_episodes

FORMAT = "xmodel-agent-results/1"
RESULTS_FILE = "agents.json"
TASKS = ("hotpotqa", "fever", "alfworld", "webshop")
COLUMNS = {"hotpotqa": "HotpotQA EM", "fever": "FEVER EM", "alfworld": "AlfWorld SR", "webshop": "WebShop SR"}
PUBLISHED = Path(__file__).with_name("published_table4.yaml")


@dataclass
class AgentSettings:
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    episodes: int | None = 50          # per task; None = all: ReAct's 500 picks, AlfWorld's 134 games, …
    subset: str = "react"              # HotpotQA/FEVER questions: react (ReAct's picks) | covered (easier; qa.py)
    batch_size: int = 8                # episodes in flight
    max_new_tokens: int = 100
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    prefix_cache: bool = True
    repeat_limit: int = 5              # identical (action, observation) steps in a row that end an episode
    max_steps: int | None = None       # None = each task's own limit (ReAct: 7, 7, 49, 14); for smoke runs
    webshop_url: str | None = None     # a running WebShop server, e.g. http://127.0.0.1:3000
    webshop_prompt: str | None = None  # ReAct's prompts/webshop_initial.json

    def validate(self):
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks: unknown task {unknown[0] if unknown else '(none)'} (known: {', '.join(TASKS)})")
        if self.episodes is not None and self.episodes < 1:
            raise ValueError(f"episodes: must be ≥ 1, got {self.episodes}")
        if self.subset not in ("covered", "react"):
            raise ValueError(f"subset: must be covered or react, got {self.subset!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be ≥ 1, got {self.batch_size}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps: must be ≥ 1, got {self.max_steps}")
        if self.repeat_limit < 0:
            raise ValueError(f"repeat_limit: must be ≥ 0, got {self.repeat_limit}")
        if self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("max_new_tokens: must be ≥ 1 (temperature ≥ 0, top_p in (0, 1])")


@lru_cache(maxsize=2)
def offline_wiki(data_root: str):
    from .wiki import OfflineWikipedia

    return OfflineWikipedia(Path(data_root) / "eval" / "react" / "wiki_passages.jsonl")


def build_episodes(task: str, data_root: Path, settings: AgentSettings, scripted: bool):
    """The task's episodes, or a string saying why the task cannot run here."""
    n = settings.episodes
    if task in ("hotpotqa", "fever"):
        from . import qa

        wiki = offline_wiki(str(data_root))
        loader = qa.load_hotpotqa if task == "hotpotqa" else qa.load_fever
        items = loader(data_root, wiki, settings.subset, n)
        if scripted:  # an oracle needs the gold pages: only questions whose pages are known and present
            items = [it for it in items if it.covered is not False and (it.gold_titles or it.kind == "NOT ENOUGH INFO")]
        extra = {"subset": settings.subset, "coverage": qa.coverage_summary(items),
                 "data": "eval/react/hotpot_dev_distractor_sample.jsonl" if task == "hotpotqa" and
                 settings.subset == "covered" else ("eval/react/data/hotpot_dev_v1_simplified.json"
                                                    if task == "hotpotqa" else "eval/react/data/paper_dev.jsonl"),
                 "prompt": "/".join(qa.PROMPTS[task]), "passages": len(wiki)}
        return qa.make_episodes(items, qa.load_prompt(data_root, task), wiki, max_steps=settings.max_steps or 7,
                                repeat_limit=settings.repeat_limit), extra
    if task == "alfworld":
        from . import alfworld

        if not alfworld.alfworld_available():
            return "alfworld/textworld not installed (pip install 'xmodel[alfworld]')", {}
        eps = alfworld.make_episodes(data_root, n, expert=scripted, repeat_limit=settings.repeat_limit,
                                     max_steps=settings.max_steps or alfworld.MAX_ACTIONS)
        return eps, {"games": "eval/alfworld/json_2.1.1/valid_unseen", "prompt": "alfworld_3prompts.json"}
    from . import webshop

    if scripted:
        return "no scripted WebShop policy (it needs the product catalogue's goals)", {}
    if not settings.webshop_url or not settings.webshop_prompt:
        return ("needs a running WebShop server (--webshop-url) with its product catalogue and ReAct's "
                "webshop_initial.json (--webshop-prompt); see docs/AGENTS.md"), {}
    site = webshop.WebShopHTTP(settings.webshop_url)
    prompt = webshop.load_prompt(Path(settings.webshop_prompt))
    return webshop.make_episodes(site, prompt, n or 500, repeat_limit=settings.repeat_limit,
                                 max_steps=settings.max_steps or webshop.MAX_ACTIONS), \
        {"server": settings.webshop_url}


INVALID_PREFIXES = ("Invalid action", "Nothing happens.")


def summarize(task: str, records: list[dict], stats: RunStats, extra: dict, traces: str | None) -> dict:
    n = len(records)
    key = "em" if task in ("hotpotqa", "fever") else "success"
    value = 100 * sum(r[key] for r in records) / n if n else 0.0
    out = {"metric": "EM" if key == "em" else "success rate", "value": round(value, 2), "n": n,
           **extra,
           "stop_reasons": dict(Counter(r["stop_reason"] for r in records)),
           "invalid_actions": sum(s["observation"].startswith(INVALID_PREFIXES) for r in records for s in r["steps"]),
           "steps": sum(r["n_steps"] for r in records),
           "followup_calls": sum(r["bad_calls"] for r in records),
           "prompt_truncated_episodes": sum(r["prompt_tokens_dropped"] > 0 for r in records),
           "timing": stats.to_dict(), "traces": traces}
    if task == "hotpotqa":
        out["f1"] = round(100 * sum(r["f1"] for r in records) / n, 2) if n else 0.0
    if task in ("hotpotqa", "fever"):
        cov = [r for r in records if r["covered"] is True]
        out["value_on_covered"] = round(100 * sum(r["em"] for r in cov) / len(cov), 2) if cov else None
        out["n_covered"] = len(cov)
        out["labels"] = dict(Counter(r["gold"] for r in records)) if task == "fever" else \
            dict(Counter(r["kind"] for r in records))
        retrieval = sum(r["retrieval_seconds"] for r in records)
        out["timing"]["retrieval_s"] = round(retrieval, 4)
        out["timing"]["retrieval_share"] = round(retrieval / max(stats.wall_s, 1e-9), 4)
    if task == "alfworld":
        by_type: dict[str, list[int]] = {}
        for r in records:
            row = by_type.setdefault(r["task_type"], [0, 0])
            row[0] += int(r["success"])
            row[1] += 1
        out["by_type"] = {k: {"success": s, "n": c} for k, (s, c) in by_type.items()}
        out["put_aliases"] = sum(r["put_aliases"] for r in records)
    if task == "webshop":
        out["score"] = round(100 * sum(r["score"] for r in records) / n, 2) if n else 0.0
    return out


def evaluate_agents(model, tokenizer, data_root: Path, out_dir: Path, settings: AgentSettings | None = None,
                    model_info: dict | None = None, policy: Policy | None = None, progress: bool = True) -> dict:
    """Run the suite; ``model=None`` with ``policy=ScriptedPolicy()`` runs the oracle/expert policies."""
    from ...config.core import build_section

    settings = settings or AgentSettings()
    settings = build_section(AgentSettings, asdict(settings), "agents")
    out_dir = Path(out_dir)
    scripted = isinstance(policy, ScriptedPolicy)
    if policy is None:
        from .policy import GenerationSettings, LMPolicy

        gen = GenerationSettings(settings.max_new_tokens, settings.temperature, settings.top_p, settings.seed,
                                 settings.prefix_cache)
        policy = LMPolicy(model, tokenizer, gen)
    if model_info is None:
        model_info = {"name": "scripted" if scripted else type(model).__name__}
        if model is not None:
            model_info["parameters"] = sum(p.numel() for p in model.parameters())
    results = {"format": FORMAT, "model": model_info, "policy": "scripted" if scripted else "model",
               "settings": {**asdict(settings), "data_root": str(data_root),
                            "decoding": "greedy" if settings.temperature == 0 else "sampling",
                            "context_tokens": getattr(policy, "context", None)},
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "tasks": {}, "skipped": {}}
    total = RunStats()
    for task in settings.tasks:
        episodes, extra = build_episodes(task, Path(data_root), settings, scripted)
        if isinstance(episodes, str):
            results["skipped"][task] = episodes
            continue
        if not episodes:
            results["skipped"][task] = "no episodes (nothing in this subset)"
            continue
        trace_name = f"traces_{task}.jsonl"
        records, stats = run_episodes(episodes, policy, settings.batch_size, out_dir / trace_name, progress,
                                      desc=task)
        results["tasks"][task] = summarize(task, records, stats, extra, trace_name)
        for name in ("episodes", "rounds", "completions"):
            setattr(total, name, getattr(total, name) + getattr(stats, name))
        for name in ("generation_s", "environment_s", "wall_s"):
            setattr(total, name, getattr(total, name) + getattr(stats, name))
    results["timing"] = total.to_dict()
    write_json(out_dir / RESULTS_FILE, results)
    return results


def load_results(path: str | Path) -> dict:
    data = read_results_file(path, RESULTS_FILE, FORMAT, "no agent results (run 'xmodel agent run' first)")
    data.pop("_path", None)
    return data


# ---------------------------------------------------------------- tables

def published() -> dict:
    return yaml.safe_load(PUBLISHED.read_text(encoding="utf-8"))


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.2f}"


def _label(res: dict) -> str:
    """Our row's name: the model, its episode counts, and — when HotpotQA/FEVER ran on the covered questions
    rather than ReAct's picks — that it is the easier set."""
    name = res["model"].get("name", "model")
    if res.get("policy") == "scripted":
        name = "scripted oracle/expert"
    ns = sorted({t["n"] for t in res["tasks"].values()})
    label = f"{name} (n={'/'.join(map(str, ns))})" if ns else name
    if any(t.get("subset") == "covered" for t in res["tasks"].values()):
        label += " [covered subset: easier, not ReAct's picks]"
    return label


def table4_rows(results: list[dict]) -> tuple[list[str], list[list[str]], set[int]]:
    """Table 4's header and rows: the published rows, then one row per results dict (indices in `ours`).

    Our Avg is the mean over the four tasks when all four ran; otherwise over those that ran, marked †."""
    pub = published()
    header = ["Model", *(COLUMNS[c] for c in pub["columns"]), "Avg"]
    rows = [[r[0], *(_fmt(v) for v in r[1:])] for r in pub["rows"]]
    ours = set()
    for res in results:
        values = [res["tasks"].get(c, {}).get("value") for c in pub["columns"]]
        present = [v for v in values if v is not None]
        avg = _fmt(sum(present) / len(present)) if present else "–"
        if present and len(present) < len(values):
            avg += "†"
        ours.add(len(rows))
        rows.append([_label(res), *(_fmt(v) for v in values), avg])
    return header, rows, ours


def table4_markdown(results: list[dict]) -> str:
    from .qa import SUBSETS

    header, rows, ours = table4_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for i, row in enumerate(rows):
        cells = [f"**{c}**" if i in ours and c != "–" else c for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"Published rows: {published()['source']} (ReAct prompting; EM for HotpotQA/FEVER, success rate "
             "for AlfWorld/WebShop, in %). Our rows in bold."]
    for res in results:
        for task, t in res["tasks"].items():
            if task in ("hotpotqa", "fever"):
                cov = t.get("coverage", {})
                notes.append(f"{_label(res)} {task}: {t['n']} questions of subset '{t.get('subset')}' "
                             f"({SUBSETS.get(t.get('subset'), '?')}) on the offline passage store; "
                             f"{cov.get('covered', 0)} have all gold pages in it, "
                             f"{cov.get('not_covered', 0)} do not, {cov.get('unknown_or_nei', 0)} unknown/NEI "
                             f"(EM on covered: {_fmt(t.get('value_on_covered'))}).")
        for task, why in res.get("skipped", {}).items():
            notes.append(f"{_label(res)} {task}: not run – {why}.")
    if any(len(r.get("tasks", {})) < 4 for r in results):
        notes.append("† mean over the tasks that ran.")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def summary_markdown(res: dict) -> str:
    """One run, task by task: metric, episodes, stop reasons, invalid actions, time split."""
    lines = ["| task | metric | value | episodes | steps | invalid actions | follow-up calls | stop reasons | "
             "episodes/min | generation | environment |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for task, t in res["tasks"].items():
        tm = t["timing"]
        stops = ", ".join(f"{k} {v}" for k, v in sorted(t["stop_reasons"].items()))
        lines.append(f"| {task} | {t['metric']} | {t['value']:.2f} | {t['n']} | {t['steps']} | "
                     f"{t['invalid_actions']} | {t['followup_calls']} | {stops} | {tm['episodes_per_minute']:.2f} | "
                     f"{100 * tm['generation_share']:.1f}% | {100 * tm['environment_share']:.1f}% |")
    for task, why in res.get("skipped", {}).items():
        lines.append(f"| {task} | – | – | 0 | – | – | – | skipped: {why} | – | – | – |")
    return "\n".join(lines) + "\n"
