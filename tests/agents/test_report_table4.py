"""`xmodel report` shows the agents' Table 4 when agents.json sits beside a results file."""

from pathlib import Path

from xmodel.eval.agents import AgentSettings, evaluate_agents
from xmodel.eval.agents.loop import ScriptedPolicy
from xmodel.eval.report import write_report
from xmodel.eval.results import RESULTS_FILE, merge_results, write_json


def test_report_includes_table4(tmp_path, data_root):
    out = tmp_path / "model"
    out.mkdir()
    # The scripted oracle needs every gold page in the store: the covered questions (ReAct's picks, the default,
    # mostly lack them).
    evaluate_agents(None, None, Path(data_root), out,
                    AgentSettings(episodes=2, tasks=["hotpotqa", "fever"], subset="covered"),
                    model_info={"name": "oracle"}, policy=ScriptedPolicy(), progress=False)
    write_json(out / RESULTS_FILE, merge_results(None, {"name": "oracle", "path": str(out)}, {"suites": ["agents"]},
                                                 {}, {}, {}))
    md, page = write_report([str(out)], tmp_path / "report")
    text = md.read_text()
    assert "Agent tasks (ReAct)" in text and "Xmodel-2-1.2B | 13.70 | 40.00" in text
    assert "**100.00** | **100.00**" in text  # the oracle's HotpotQA and FEVER EM, highlighted as ours
    assert "[covered subset: easier, not ReAct's picks]" in text
    # The settings table states each task's question set and episodes.
    assert "| oracle | hotpotqa | covered (easier: only questions whose gold pages are all in the offline store" \
           in text
    assert "Agent tasks" in page.read_text()
