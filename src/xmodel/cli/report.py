"""`xmodel report`: one Markdown + HTML report of evaluation results beside the reports' published rows."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="Markdown + HTML report of eval results beside the published Xmodel-2 / peers rows",
        description="Collect results.json files written by 'xmodel eval' (given directly, as their directories, "
                    "or found below a run directory) and write report.md and report.html: the Xmodel-2 tables "
                    "(commonsense, complex reasoning) and the Chinese table with our rows beside the published "
                    "ones, the MMLU calibration and WikiText-2 scaling-law plots, and every setting used.")
    p.add_argument("inputs", nargs="+", metavar="RUN_OR_RESULTS",
                   help="results.json files, or directories containing them (searched recursively)")
    p.add_argument("--output", default="runs/report", help="directory for report.md, report.html and plots/")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..eval.report import write_report

    md, page = write_report(args.inputs, Path(args.output))
    print(f"wrote {md} and {page}")
    return 0
