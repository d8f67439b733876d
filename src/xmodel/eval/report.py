"""`xmodel report`: our models' results beside the published rows, in the reports' table layouts.

The report is built once as a list of blocks (headings, paragraphs, tables, images) and rendered twice, to
Markdown and to a self-contained HTML page, so the two never disagree. Published numbers come from
``published.yaml`` (transcribed from the reports); ours from `xmodel eval`'s results.json files.
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from ..errors import XmodelError
from .results import RESULTS_FILE, load_results
from .suites import BENCHMARKS

PUBLISHED = Path(__file__).with_name("published.yaml")


@lru_cache(maxsize=1)
def published() -> dict:
    return yaml.safe_load(PUBLISHED.read_text(encoding="utf-8"))


# ---------------------------------------------------------------- document blocks

@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    ours: set[int] = field(default_factory=set)  # row indices to emphasise


@dataclass
class Image:
    path: str
    alt: str


def render_markdown(blocks: list) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}\n")
        elif isinstance(b, Para):
            out.append(f"{b.text}\n")
        elif isinstance(b, Table):
            if b.caption:
                out.append(f"*{b.caption}*\n")
            out.append("| " + " | ".join(b.header) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(b.header) - 1)) + "|")
            for i, row in enumerate(b.rows):
                cells = [f"**{c}**" if i in b.ours and c not in ("", "–") else c for c in row]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.path})\n")
    return "\n".join(out)


HTML_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}tr.ours{background:#fff3c4;font-weight:600}
caption{caption-side:top;text-align:left;font-style:italic;padding-bottom:4px}img{max-width:640px;display:block}
code{background:#f3f3f3;padding:0 3px}"""


def _inline_html(text: str) -> str:
    # The few Markdown inline marks our paragraphs use: `code` and **bold**.
    import re

    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)


def render_html(blocks: list, title: str) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{HTML_STYLE}</style></head><body>"]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Table):
            out.append("<table>")
            if b.caption:
                out.append(f"<caption>{html.escape(b.caption)}</caption>")
            out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in b.header) + "</tr>")
            for i, row in enumerate(b.rows):
                cls = " class='ours'" if i in b.ours else ""
                out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
            out.append("</table>")
        elif isinstance(b, Image):
            out.append(f"<img src='{html.escape(b.path)}' alt='{html.escape(b.alt)}'>")
    out.append("</body></html>")
    return "\n".join(out)


# ---------------------------------------------------------------- gathering results

def find_results(paths: list[str]) -> list[dict]:
    """results.json files named directly, in the given directories, or anywhere below them (e.g. a run dir)."""
    found: list[dict] = []
    seen: set[str] = set()
    for p in map(Path, paths):
        if p.is_file():
            candidates = [p]
        elif (p / RESULTS_FILE).is_file():
            candidates = [p / RESULTS_FILE]
        elif p.is_dir():
            candidates = sorted(p.rglob(RESULTS_FILE))
            if not candidates:
                raise XmodelError(f"{p}: no {RESULTS_FILE} in it or below it (run 'xmodel eval' first)")
        else:
            raise XmodelError(f"{p}: no such file or directory")
        for c in candidates:
            key = str(c.resolve())
            if key not in seen:
                seen.add(key)
                found.append(load_results(c))
    return found


def _label(res: dict) -> str:
    limits = {row.get("settings", {}).get("limit") for row in res["benchmarks"].values()}
    limits.discard(None)
    name = res["model"]["name"]
    return f"{name} (limit {max(limits)})" if limits else name


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _our_row(res: dict, benchmarks: list[str]) -> tuple[list[str], bool]:
    values = [res["benchmarks"].get(b, {}).get("value") for b in benchmarks]
    present = [v for v in values if v is not None]
    if not present:
        return [], False
    complete = len(present) == len(values)
    avg = sum(present) / len(present)
    avg_text = _fmt(avg) if complete else f"{avg:.2f}†"
    return [_label(res), *map(_fmt, values), avg_text], not complete


def comparison_table(results: list[dict], spec: dict, caption: str) -> tuple[Table | None, bool]:
    """The published rows of one table, then ours (emphasised); None when none of ours has these benchmarks."""
    benches = spec["benchmarks"]
    header = ["Model", *(BENCHMARKS[b].column for b in benches), "Avg"]
    rows = [[r[0], *(_fmt(v) for v in r[1:])] for r in spec.get("rows", [])]
    ours, partial = set(), False
    for res in results:
        row, incomplete = _our_row(res, benches)
        if row:
            ours.add(len(rows))
            rows.append(row)
            partial |= incomplete
    if not ours:
        return None, False
    return Table(header, rows, caption, ours), partial


def build_report(results: list[dict], out_dir: Path) -> list:
    pub = published()
    x2, xlm = pub["xmodel_2"], pub["xmodel_lm"]
    blocks: list = [Heading(1, "Evaluation report"),
                    Para(f"Our models (highlighted) beside the published rows of the {x2['source']} and the "
                         f"{xlm['source']}. Values are in %. Published numbers are quoted from the reports; ours "
                         "come from `xmodel eval` (lm-evaluation-harness on local benchmark files). A model "
                         "evaluated with `--limit` is labelled so: its numbers cover a subset and are not "
                         "comparable to the published ones.")]
    sections = [("Commonsense reasoning (zero-shot)", x2["commonsense"]),
                ("Complex reasoning", x2["reasoning"]),
                ("Chinese", xlm["chinese"])]
    for title, spec in sections:
        table, partial = comparison_table(results, spec, spec["caption"])
        if table is None:
            continue
        blocks += [Heading(2, title), table]
        if partial:
            blocks.append(Para("† average over the benchmarks that were evaluated (a benchmark whose files "
                               "are missing, or that was not run, shows –)."))
        if spec is xlm["chinese"] or spec is x2["commonsense"]:
            key = "chinese" if spec is xlm["chinese"] else "commonsense"
            avg = xlm["averages"][key]
            blocks.append(Para(f"{avg['model']} reports an average of {avg['value']:.2f} on its {key} benchmarks "
                               "(its own task set; per-task numbers are not in the report text available here)."))
    blocks += _agent_blocks(results)
    blocks += _calibration_blocks(results, out_dir, x2["calibration"]["caption"])
    blocks += _scaling_blocks(results, out_dir, x2["scaling_law"])
    blocks += _settings_blocks(results)
    return blocks


def _agent_blocks(results: list[dict]) -> list:
    """Table 4 (ReAct agents) from the agents.json files beside our results files."""
    from .agents import load_results as load_agent_results
    from .agents import table4_rows
    from .agents.suite import RESULTS_FILE as AGENT_RESULTS

    agent = [load_agent_results(Path(r["_path"]).parent) for r in results
             if (Path(r["_path"]).parent / AGENT_RESULTS).is_file()]
    if not agent:
        return []
    header, rows, ours = table4_rows(agent)
    return [Heading(2, "Agent tasks (ReAct)"),
            Table(header, rows, "Table 4: ReAct agents — EM for HotpotQA/FEVER, success rate for AlfWorld/WebShop; "
                                "† mean over the tasks that ran", ours)]


def _copy_plot(res: dict, name: str, out_dir: Path) -> str | None:
    src = Path(res["_path"]).parent / name
    if not src.is_file():
        return None
    rel = Path("plots") / f"{res['model']['name']}_{name}"
    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out_dir / rel)
    return rel.as_posix()


def _calibration_blocks(results: list[dict], out_dir: Path, caption: str) -> list:
    rows, images = [], []
    for res in results:
        cal = res.get("calibration")
        if not cal:
            continue
        rows.append([_label(res), str(cal["n"]), f"{100 * cal['accuracy']:.2f}",
                     f"{100 * cal['mean_confidence']:.2f}", f"{cal['ece']:.4f}"])
        plot = _copy_plot(res, cal.get("plot", ""), out_dir) if cal.get("plot") else None
        if plot:
            images.append(Image(plot, f"MMLU reliability diagram of {res['model']['name']}"))
    if not rows:
        return []
    return [Heading(2, "Calibration on MMLU"),
            Para(f"Confidence = softmax over the A/B/C/D log-probabilities of the chosen letter; ECE over 10 "
                 f"equal-width bins. The report shows this as a plot ({caption})."),
            Table(["Model", "questions", "accuracy", "mean confidence", "ECE"], rows), *images]


def _scaling_blocks(results: list[dict], out_dir: Path, spec: dict) -> list:
    ref = spec["fit"]
    rows = [["Xmodel-2-1.2B (report)", "–", "–", f"{ref['a']:.3f}", f"{ref['b']:.3f}", f"{ref['c']:.2f}", "–"]]
    images, ours = [], set()
    for res in results:
        sl = res.get("scaling_law")
        if not sl:
            continue
        f = sl["fit"]
        ours.add(len(rows))
        rows.append([res["model"]["name"], str(sl["context_length"]), str(sl["windows"]),
                     f"{f['a']:.3f} ± {f['a_err']:.3f}", f"{f['b']:.3f} ± {f['b_err']:.3f}",
                     f"{f['c']:.2f} ± {f['c_err']:.2f}", f"{f['r2']:.4f}"])
        plot = _copy_plot(res, sl.get("plot", ""), out_dir) if sl.get("plot") else None
        if plot:
            images.append(Image(plot, f"WikiText-2 loss by context position of {res['model']['name']}"))
        if sl.get("warning"):
            images.append(Para(f"{res['model']['name']}: {sl['warning']}."))
    if not ours:
        return []
    return [Heading(2, "Post-training scaling law (WikiText-2)"),
            Para("Mean next-token loss after t context tokens, fitted with L(t) = b + (t/c)^a (SciPy least "
                 f"squares; ± one standard error). {spec['caption']}. Loss values depend on the tokenizer, so a "
                 "and c compare across models more directly than b."),
            Table(["Model", "context", "windows", "a", "b", "c", "R²"], rows, ours=ours), *images]


def _settings_blocks(results: list[dict]) -> list:
    rows = []
    for res in results:
        for name, row in res["benchmarks"].items():
            s = row.get("settings", {})
            rows.append([res["model"]["name"], name, row["metric"], str(row["num_fewshot"]), str(row["n"]),
                         str(row.get("n_total", "")), str(s.get("limit") or "–"), s.get("dtype", ""),
                         "yes" if s.get("add_bos_token") else "no", row.get("date", "")[:10]])
    blocks = [Heading(2, "Settings"),
              Para("Every number above with the settings that produced it: published results differ through "
                   "few-shot counts, BOS handling and acc vs acc_norm, so all of them are stated."),
              Table(["Model", "benchmark", "lm-eval metric", "shots", "docs", "of", "limit", "dtype", "BOS",
                     "date"], rows)]
    skipped = [(res["model"]["name"], n, r) for res in results for n, r in res.get("skipped", {}).items()]
    if skipped:
        blocks.append(Table(["Model", "skipped benchmark", "reason"], [list(s) for s in skipped]))
    return blocks


def write_report(paths: list[str], out_dir: Path) -> tuple[Path, Path]:
    results = find_results(paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    blocks = build_report(results, out_dir)
    md, page = out_dir / "report.md", out_dir / "report.html"
    for path, text in ((md, render_markdown(blocks)), (page, render_html(blocks, "Xmodel evaluation report"))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return md, page

