"""The ReAct loop end to end with scripted policies: the gold-action oracle scores EM 100 %, and a policy that
writes every kind of bad output gets defined observations and stop reasons, never a crash."""

import json

from xmodel.eval.agents import AgentSettings, evaluate_agents, qa
from xmodel.eval.agents.loop import Request, ScriptedPolicy, run_episodes


def test_oracle_reaches_em_100_on_hotpotqa_and_fever(data_root, tmp_path):
    # The oracle searches the gold pages, so it runs on the covered questions (not the default, ReAct's picks).
    settings = AgentSettings(tasks=["hotpotqa", "fever"], episodes=40, batch_size=8, subset="covered")
    res = evaluate_agents(None, None, data_root, tmp_path, settings, policy=ScriptedPolicy(), progress=False)
    for task in ("hotpotqa", "fever"):
        t = res["tasks"][task]
        assert t["value"] == 100.0 and t["n"] == 40, (task, t)
        assert t["stop_reasons"] == {"finished": 40}
        records = [json.loads(line) for line in (tmp_path / t["traces"]).read_text().splitlines()]
        assert len(records) == 40
        for r in records:
            searches = [s for s in r["steps"] if s["action"].startswith("Search[")]
            assert len(searches) == len(r["gold_titles"])
            assert not any(s["observation"].startswith("Could not find") for s in searches), r["id"]
            assert r["pages_seen"] == [t_.strip() for t_ in r["gold_titles"]] or \
                [p.casefold() for p in r["pages_seen"]] == [g.casefold() for g in r["gold_titles"]]
    fever = res["tasks"]["fever"]
    assert set(fever["labels"]) <= set(qa.FEVER_LABELS)
    assert json.loads((tmp_path / "agents.json").read_text())["tasks"]["hotpotqa"]["value"] == 100.0


class ChaosPolicy:
    """Writes, episode by episode, the outputs a weak model writes: no action line (ReAct's follow-up call),
    an empty action, missing brackets, a missing closing bracket, a runaway argument, an unknown verb."""

    SCRIPT = [
        " I am thinking without acting and then I keep going and going",   # no "Action i:" → follow-up call
        "",                                                                # the follow-up: empty action
        " hmm\nAction {i}: Search Ed Wood",
        " hmm\nAction {i}: Search[Ed Wood",
        " x\nAction {i}: Lookup[" + "y" * 500 + "]",
        " x\nAction {i}: Dance[now]",
        " x\nAction {i}: Search[Ed Wood]",
        " x\nAction {i}: Lookup[film]",
    ]

    def complete(self, requests: list[Request]) -> list[str]:
        out = []
        for r in requests:
            i = len(r.episode.steps) + 1
            out.append(self.SCRIPT[min(r.episode.calls, len(self.SCRIPT) - 1)].replace("{i}", str(i)))
        return out


def test_bad_outputs_give_defined_observations(data_root, wiki):
    items = qa.load_hotpotqa(data_root, wiki, "covered", 3)
    episodes = qa.make_episodes(items, "PREFIX\n", wiki, max_steps=7, repeat_limit=0)
    records, stats = run_episodes(episodes, ChaosPolicy(), batch_size=3, progress=False)
    assert len(records) == 3
    observations = [s["observation"] for r in records for s in r["steps"]]
    assert all(o for o in observations)
    assert any("empty" in o for o in observations)
    assert any("missing brackets" in o for o in observations)
    assert any("missing closing bracket" in o for o in observations)
    assert any("longer than" in o for o in observations)
    assert any(o.startswith("Invalid action: Dance[now]") for o in observations)
    assert all(r["stop_reason"] == "step_limit" and r["n_steps"] == 7 and r["em"] == 0.0 for r in records)
    assert all(r["prediction"] == "" for r in records)      # ReAct's finish[] when the steps run out
    assert sum(r["bad_calls"] for r in records) > 0


def test_repeated_actions_end_the_episode(data_root, wiki):
    class Repeat:
        def complete(self, requests):
            return [f" same\nAction {len(r.episode.steps) + 1}: Search[Ed Wood]" for r in requests]

    items = qa.load_hotpotqa(data_root, wiki, "covered", 2)
    episodes = qa.make_episodes(items, "", wiki, max_steps=7, repeat_limit=3)
    records, _ = run_episodes(episodes, Repeat(), batch_size=2, progress=False)
    assert [r["stop_reason"] for r in records] == ["repeated_action", "repeated_action"]
    assert all(r["n_steps"] == 3 for r in records)
