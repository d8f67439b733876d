"""ReAct agent evaluation (Xmodel-2 report, Table 4): HotpotQA and FEVER on an offline Wikipedia, AlfWorld
through TextWorld, WebShop through its site's HTTP routes.

Modules, each readable alone:

* `actions` – reading ``verb[argument]`` out of model text, with a defined observation for every bad form;
* `loop` – episodes, policies (`ScriptedPolicy`), the batched ReAct loop and its JSONL traces;
* `policy` – the model as a policy: batched greedy completions with stop strings and a shared-prefix cache;
* `wiki` – the `WikiTool` interface, the offline BM25 store (SQLite FTS5), live Wikipedia, ReAct's WikiEnv;
* `qa` – HotpotQA / FEVER questions, coverage of the store, EM/F1, retrieval recall;
* `alfworld`, `webshop` – the two environment adapters;
* `suite` – `evaluate_agents` (→ ``agents.json``) and Table 4 (`table4_rows`, `table4_markdown`).
"""

from .suite import AgentSettings, evaluate_agents, load_results, summary_markdown, table4_markdown, table4_rows

__all__ = ["AgentSettings", "evaluate_agents", "load_results", "summary_markdown", "table4_markdown",
           "table4_rows"]
