"""`xmodel agent`: ReAct agent episodes (HotpotQA, FEVER, AlfWorld, WebShop) and the report's Table 4."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.root import data_root as resolve_data_root
from ..errors import XmodelError
from .common import add_data_root_arg, human, require_model_dir

TASK_HELP = "hotpotqa, fever, alfworld, webshop (repeatable; default: all four)"


def _task_args(p, default_episodes: int | None, default_subset: str = "react") -> None:
    p.add_argument("--task", action="append", metavar="TASK", help=TASK_HELP)
    p.add_argument("--episodes", type=int, default=default_episodes,
                   help=f"episodes per task (default: {default_episodes or 'all'})")
    p.add_argument("--subset", choices=["react", "covered"], default=default_subset,
                   help="HotpotQA/FEVER questions: 'react' = ReAct's picks (its Random(233) shuffle of the dev "
                        "indices, first n: the questions of Table 4; most of their pages are not in the offline "
                        "store); 'covered' = easier: only questions whose gold pages are all in the offline store, "
                        f"not Table 4's (default: {default_subset})")
    p.add_argument("--batch-size", type=int, default=8, help="episodes in flight at once (default 8)")
    p.add_argument("--repeat-limit", type=int, default=5,
                   help="end an episode after this many identical action+observation steps (0 = never)")
    p.add_argument("--max-steps", type=int, help="actions per episode (default: each task's own, as ReAct: "
                                                 "HotpotQA/FEVER 7, AlfWorld 49, WebShop 14)")
    p.add_argument("--output", help="directory for agents.json and traces_TASK.jsonl")
    add_data_root_arg(p)


def register(sub) -> None:
    p = sub.add_parser("agent", help="ReAct agent evaluation (HotpotQA, FEVER, AlfWorld, WebShop; Table 4)",
                       description="Run ReAct agents the way the Xmodel-2 report's Table 4 does: HotpotQA and FEVER "
                                   "(exact match) against an offline Wikipedia, AlfWorld and WebShop (success "
                                   "rate) through their environment packages.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="agent_command", metavar="ACTION")

    run = actions.add_parser("run", help="run a model's episodes; writes agents.json and per-episode traces",
                             description="Greedy ReAct episodes with a model directory. Writes OUTPUT/agents.json "
                                         "(metrics, coverage, settings, timing) and OUTPUT/traces_TASK.jsonl "
                                         "(every episode's full prompt and steps), and prints a summary.")
    run.add_argument("model", help="model directory (save_pretrained layout, with its tokenizer)")
    _task_args(run, 50)
    run.add_argument("--max-new-tokens", type=int, default=100, help="per completion (ReAct: 100)")
    run.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default, as ReAct)")
    run.add_argument("--top-p", type=float, default=1.0)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--no-prefix-cache", action="store_true",
                     help="recompute the few-shot prefix for every completion (slower; for checking)")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 … (default: cuda if available)")
    run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    run.add_argument("--tokenizer", help="tokenizer directory, if not the model directory")
    run.add_argument("--webshop-url", help="a running WebShop server (e.g. http://127.0.0.1:3000)")
    run.add_argument("--webshop-prompt", help="ReAct's prompts/webshop_initial.json")
    run.set_defaults(func=run_model)

    oracle = actions.add_parser("oracle", help="scripted gold/expert policies: proves adapters and metrics",
                                description="HotpotQA/FEVER: search each gold page, then finish with the gold "
                                            "answer; AlfWorld: follow TextWorld's PDDL expert plan. Every "
                                            "episode should score 100%%; anything less is a bug in the "
                                            "environment, parser or metric.")
    _task_args(oracle, 20, default_subset="covered")  # the oracle needs every gold page in the store
    oracle.set_defaults(func=run_oracle)

    recall = actions.add_parser("recall", help="retrieval recall of the offline search on gold pages",
                                description="For HotpotQA/FEVER questions with known gold pages: how often "
                                            "search[title] opens the page, and recall@k of BM25 with the "
                                            "question itself as the query.")
    recall.add_argument("--questions", type=int, default=200, help="questions per task (default 200)")
    recall.add_argument("--k", default="1,5,10", help="cut-offs (default 1,5,10)")
    add_data_root_arg(recall)
    recall.set_defaults(func=run_recall)

    wiki = actions.add_parser("wiki", help="try the offline Wikipedia: print what search[QUERY] returns")
    wiki.add_argument("query")
    add_data_root_arg(wiki)
    wiki.set_defaults(func=run_wiki)

    table = actions.add_parser("table", help="Table 4 (Markdown) from agents.json files beside the published rows")
    table.add_argument("results", nargs="+", help="agents.json files or the directories holding them")
    table.add_argument("--output", help="also write the table to this file")
    table.set_defaults(func=run_table)
    p.set_defaults(func=lambda args: p.print_help() or 0)


def _settings(args, **extra):
    from ..config.core import build_section
    from ..eval.agents import AgentSettings

    values = dict(tasks=args.task or ["hotpotqa", "fever", "alfworld", "webshop"], episodes=args.episodes,
                  subset=args.subset, batch_size=args.batch_size, repeat_limit=args.repeat_limit,
                  max_steps=args.max_steps, **extra)
    return build_section(AgentSettings, values, "agent")


def _finish(results: dict, out: Path) -> None:
    from ..eval.agents import summary_markdown

    print(summary_markdown(results), end="")
    print(f"wrote {out / 'agents.json'}")


def run_model(args) -> int:
    from ..eval.agents import evaluate_agents
    from ..model.loading import load_model_and_tokenizer, resolve_device

    settings = _settings(args, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                         top_p=args.top_p, seed=args.seed, prefix_cache=not args.no_prefix_cache,
                         webshop_url=args.webshop_url, webshop_prompt=args.webshop_prompt)
    data_root = resolve_data_root(args.data_root)
    model_dir = require_model_dir(args.model)
    device = resolve_device(args.device)
    model, tokenizer = load_model_and_tokenizer(model_dir, args.tokenizer, device, args.dtype)
    n_params = sum(p.numel() for p in model.parameters())
    out = Path(args.output) if args.output else Path("runs") / "agents" / model_dir.resolve().name
    print(f"agents: {model_dir} ({human(n_params)} parameters) on {device}, data root {data_root}")
    info = {"name": model_dir.resolve().name, "path": str(model_dir.resolve()), "parameters": n_params,
            "device": device, "dtype": args.dtype}
    results = evaluate_agents(model, tokenizer, data_root, out, settings, model_info=info)
    _finish(results, out)
    return 0


def run_oracle(args) -> int:
    from ..eval.agents import evaluate_agents
    from ..eval.agents.loop import ScriptedPolicy

    settings = _settings(args)
    data_root = resolve_data_root(args.data_root)
    out = Path(args.output) if args.output else Path("runs") / "agents" / "oracle"
    results = evaluate_agents(None, None, data_root, out, settings, policy=ScriptedPolicy())
    _finish(results, out)
    failed = [t for t, r in results["tasks"].items() if r["value"] < 100]
    if failed:
        print(f"oracle below 100% on: {', '.join(failed)} (see the traces)")
        return 1
    return 0


def run_recall(args) -> int:
    from ..eval.agents import qa
    from ..eval.agents.suite import offline_wiki

    try:
        ks = tuple(sorted({int(k) for k in args.k.split(",") if k.strip()}))
    except ValueError:
        raise XmodelError(f"--k {args.k}: expected comma-separated integers") from None
    if not ks or min(ks) < 1 or args.questions < 1:
        raise XmodelError("--k values and --questions must be ≥ 1")
    data_root = resolve_data_root(args.data_root)
    wiki = offline_wiki(str(data_root))
    rows = {"hotpotqa": qa.retrieval_recall(qa.load_hotpotqa(data_root, wiki, "covered", args.questions), wiki, ks),
            "fever": qa.retrieval_recall([it for it in qa.load_fever(data_root, wiki, "covered", None)
                                          if it.gold_titles][:args.questions], wiki, ks)}
    print(f"offline store: {len(wiki)} pages; query = the question/claim, BM25 (SQLite FTS5)")
    cols = ["title_hit"] + [f"recall@{k}" for k in ks] + [f"all@{k}" for k in ks]
    print(f"{'task':<9} {'questions':>9} {'titles':>7} " + " ".join(f"{c:>10}" for c in cols))
    for task, r in rows.items():
        print(f"{task:<9} {r['questions']:>9} {r['gold_titles']:>7} " +
              " ".join(f"{100 * r[c]:>9.1f}%" for c in cols))
    return 0


def run_wiki(args) -> int:
    from ..eval.agents.suite import offline_wiki
    from ..eval.agents.wiki import WikiEnv

    env = WikiEnv(offline_wiki(str(resolve_data_root(args.data_root))))
    print(env.step(f"search[{args.query}]"))
    return 0


def run_table(args) -> int:
    from ..eval.agents import load_results, table4_markdown

    text = table4_markdown([load_results(p) for p in args.results])
    print(text, end="")
    if args.output:
        path = Path(args.output)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return 0
