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


SUBSET_MARK = "‡"      # our number covers part of the benchmark (the data kit holds only a sample)
PROTOCOL_MARK = "§"    # our number was measured under another protocol than the table's


def _cell(res: dict, bench: str, expected_protocol: str | None) -> tuple[str, float | None, list[str]]:
    """One of our cells: its text, its value and the marks it carries."""
    row = res["benchmarks"].get(bench)
    if row is None or row.get("value") is None:
        return "–", None, []
    marks = []
    if row.get("subset"):
        marks.append(SUBSET_MARK)
    if expected_protocol is not None and row.get("protocol") != expected_protocol:
        marks.append(PROTOCOL_MARK)
    return _fmt(row["value"]) + "".join(marks), row["value"], marks


def _our_row(res: dict, benchmarks: list[str]) -> tuple[list[str], bool, set[str]]:
    cells = [_cell(res, b, BENCHMARKS[b].protocol or None) for b in benchmarks]
    present = [v for _, v, _ in cells if v is not None]
    if not present:
        return [], False, set()
    complete = len(present) == len(cells)
    avg = sum(present) / len(present)
    avg_text = _fmt(avg) if complete else f"{avg:.2f}†"
    marks = {m for _, _, ms in cells for m in ms}
    return [_label(res), *(text for text, _, _ in cells), avg_text], not complete, marks


def comparison_table(results: list[dict], spec: dict, caption: str) -> tuple[Table | None, bool, set[str]]:
    """The published rows of one table, then ours (emphasised); None when none of ours has these benchmarks.
    Also whether an average of ours is partial (†) and which marks our cells carry (‡ subset, § protocol)."""
    benches = spec["benchmarks"]
    header = ["Model", *(BENCHMARKS[b].column for b in benches), "Avg"]
    rows = [[r[0], *(_fmt(v) for v in r[1:])] for r in spec.get("rows", [])]
    ours, partial, marks = set(), False, set()
    for res in results:
        row, incomplete, row_marks = _our_row(res, benches)
        if row:
            ours.add(len(rows))
            rows.append(row)
            partial |= incomplete
            marks |= row_marks
    if not ours:
        return None, False, set()
    return Table(header, rows, caption, ours), partial, marks


def _subset_notes(results: list[dict], benches: list[str]) -> list[str]:
    notes = {}
    for res in results:
        for b in benches:
            subset = res["benchmarks"].get(b, {}).get("subset")
            if subset:
                notes[b] = subset
    return [f"{SUBSET_MARK} {BENCHMARKS[b].column}: our number covers a subset — {s}; the published rows "
            "used the whole set, and our average includes the subset's number." for b, s in notes.items()]


def build_report(results: list[dict], out_dir: Path) -> list:
    pub = published()
    x2, xlm, other = pub["xmodel_2"], pub["xmodel_lm"], pub["unpublished"]
    blocks: list = [Heading(1, "Evaluation report"),
                    Para(f"Our models (highlighted) beside the published rows of the {x2['source']} and the "
                         f"{xlm['source']} (its tables as printed in {xlm['tables_from']}). Values are in %. "
                         "Published numbers are quoted from the reports; ours come from `xmodel eval` "
                         "(lm-evaluation-harness on local benchmark files; code scored as bigcode-evaluation-harness "
                         "scores it). A model evaluated with `--limit` is labelled so: its numbers cover a subset "
                         f"and are not comparable to the published ones. {SUBSET_MARK} marks a benchmark of which "
                         "the data kit holds only a sample.")]
    sections = [("Commonsense reasoning (Xmodel-2 Table 2, zero-shot)", x2["commonsense"]),
                ("Complex reasoning (Xmodel-2 Table 3)", x2["reasoning"]),
                ("Commonsense reasoning (Xmodel-LM, zero-shot)", xlm["commonsense"]),
                ("Chinese ability (Xmodel-LM, zero-shot)", xlm["chinese"]),
                ("C-Eval and CMMLU", other["chinese_exams"]),
                ("Code under lm-eval's own protocol", other["code_lmeval"])]
    for title, spec in sections:
        table, partial, marks = comparison_table(results, spec, spec["caption"])
        if table is None:
            continue
        blocks += [Heading(2, title), table]
        if partial:
            blocks.append(Para("† average over the benchmarks that were evaluated (a benchmark whose files "
                               "are missing, or that was not run, shows –)."))
        if SUBSET_MARK in marks:
            blocks += [Para(note) for note in _subset_notes(results, spec["benchmarks"])]
        if PROTOCOL_MARK in marks:
            blocks.append(Para(f"{PROTOCOL_MARK} measured under another protocol than the table's (a results file "
                               "from before HumanEval/MBPP followed bigcode-evaluation-harness): not comparable "
                               "with the published column; evaluate again with `--suite code`."))
    agent = _agent_results(results)
    blocks += _agent_blocks(agent)
    blocks += _calibration_blocks(results, out_dir, x2["calibration"]["caption"])
    blocks += _scaling_blocks(results, out_dir, x2["scaling_law"])
    blocks += _settings_blocks(results, agent)
    return blocks


def _agent_results(results: list[dict]) -> list[dict]:
    """The agents.json files (Table 4) beside our results files."""
    from .agents import load_results as load_agent_results
    from .agents.suite import RESULTS_FILE as AGENT_RESULTS

    return [load_agent_results(Path(r["_path"]).parent) for r in results
            if (Path(r["_path"]).parent / AGENT_RESULTS).is_file()]


def _agent_blocks(agent: list[dict]) -> list:
    """Table 4 (ReAct agents), with the question set each row used."""
    from .agents import table4_rows
    from .agents.qa import SUBSETS

    if not agent:
        return []
    header, rows, ours = table4_rows(agent)
    subsets = sorted({t.get("subset") for res in agent for t in res["tasks"].values() if t.get("subset")})
    notes = [f"HotpotQA/FEVER questions: {name} = {SUBSETS[name]}." for name in subsets if name in SUBSETS]
    return [Heading(2, "Agent tasks (ReAct)"),
            Table(header, rows, "Table 4: ReAct agents — EM for HotpotQA/FEVER, success rate for AlfWorld/WebShop; "
                                "† mean over the tasks that ran", ours), *(Para(n) for n in notes)]


def _copy_plot(res: dict, name: str, out_dir: Path) -> str | None:
    src = Path(res["_path"]).parent / name
    if not src.is_file():
        return None
    rel = Path("plots") / f"{res['model']['name']}_{name}"
    (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out_dir / rel)
    return rel.as_posix()


def _calibration_views(cal: dict) -> list[tuple[str, dict]]:
    """(view, numbers) of one results file's calibration; a file from before the per-choice view holds only the
    top-label numbers at its top level."""
    if "top_label" not in cal:
        return [("chosen letter (top label)", cal)]
    return [("every A/B/C/D option (Figure 4)", cal["per_choice"]), ("chosen letter (top label)", cal["top_label"])]


def _calibration_blocks(results: list[dict], out_dir: Path, caption: str) -> list:
    rows, images = [], []
    for res in results:
        cal = res.get("calibration")
        if not cal:
            continue
        questions = cal.get("questions", cal.get("n"))
        for view, c in _calibration_views(cal):
            rows.append([_label(res), view, str(questions), str(c["n"]), f"{100 * c['accuracy']:.2f}",
                         f"{100 * c['mean_confidence']:.2f}", f"{c['ece']:.4f}"])
        plot = _copy_plot(res, cal.get("plot", ""), out_dir) if cal.get("plot") else None
        if plot:
            images.append(Image(plot, f"MMLU reliability diagrams of {res['model']['name']}"))
    if not rows:
        return []
    return [Heading(2, "Calibration on MMLU"),
            Para("Each question's A/B/C/D log-probabilities, softmaxed over the four letters. As the report's "
                 f"Figure 4 draws it ({caption}): every option's probability against whether that option is the "
                 "correct one, four points per question, in 10 equal-width bins (a bin's accuracy is the share "
                 "of its options that are correct). Beside it the usual top-label view: the chosen letter's "
                 "probability against whether the answer is right. ECE = Σ (n_b/N)·|accuracy_b − confidence_b|."),
            Table(["Model", "view", "questions", "points", "accuracy", "mean confidence", "ECE"], rows), *images]


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


def _how(row: dict) -> str:
    """Protocol, sampling and subset of one benchmark row, in words."""
    parts = []
    if row.get("protocol"):
        parts.append(f"protocol: {row['protocol']}")
    sampling = row.get("sampling")
    if sampling:
        parts.append("greedy" if sampling.get("decoding") == "greedy" else
                     f"{sampling['n']} samples, temperature {sampling['temperature']}, top-p {sampling['top_p']} "
                     f"({sampling.get('temperature_from', '')})")
    if row.get("subset"):
        parts.append(f"{SUBSET_MARK} subset: {row['subset']}")
    return "; ".join(parts) or "–"


def _agent_settings_rows(agent: list[dict]) -> list[list[str]]:
    from .agents.qa import SUBSETS

    rows = []
    for res in agent:
        s = res.get("settings", {})
        for task, t in res["tasks"].items():
            subset = t.get("subset")
            questions = f"{subset} ({SUBSETS.get(subset, '')})" if subset else "–"
            cov = t.get("coverage")
            covered = f"{cov.get('covered', 0)} of {cov.get('total', t['n'])}" if cov else "–"
            rows.append([res["model"].get("name", "model"), task, questions, str(t["n"]), covered,
                         s.get("decoding", "–"), str(s.get("max_new_tokens", "–")),
                         str(s.get("max_steps") or "task's own"), res.get("date", "")[:10]])
    return rows


def _settings_blocks(results: list[dict], agent: list[dict] | None = None) -> list:
    rows = []
    for res in results:
        for name, row in res["benchmarks"].items():
            s = row.get("settings", {})
            rows.append([res["model"]["name"], name, row["metric"], str(row["num_fewshot"]), str(row["n"]),
                         str(row.get("n_total", "")), str(s.get("limit") or "–"), s.get("dtype", ""),
                         "yes" if s.get("add_bos_token") else "no", _how(row), row.get("date", "")[:10]])
    blocks = [Heading(2, "Settings"),
              Para("Every number above with the settings that produced it: published results differ through "
                   "few-shot counts, BOS handling, acc vs acc_norm, prompts and decoding, so all of them are "
                   "stated."),
              Table(["Model", "benchmark", "lm-eval metric", "shots", "docs", "of", "limit", "dtype", "BOS",
                     "protocol / decoding / subset", "date"], rows)]
    agent_rows = _agent_settings_rows(agent or [])
    if agent_rows:
        blocks.append(Table(["Model", "agent task", "questions", "episodes", "gold pages in the offline store",
                             "decoding", "max new tokens", "max steps", "date"], agent_rows,
                            "ReAct agents (Table 4): the question set, episodes and decoding of every row"))
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

