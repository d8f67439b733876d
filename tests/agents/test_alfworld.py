"""AlfWorld through alfworld/TextWorld on the data root's games: TextWorld's expert plan, written the way
ReAct's prompts write actions, wins every game it plays; bad actions cost a step and nothing else.
Skipped when the optional `alfworld` extra is not installed."""

import pytest

pytest.importorskip("textworld")
pytest.importorskip("alfworld")

from xmodel.eval.agents import AgentSettings, alfworld, evaluate_agents  # noqa: E402
from xmodel.eval.agents.loop import ScriptedPolicy, run_episodes  # noqa: E402


def test_games_and_prompts(data_root):
    games = alfworld.game_files(data_root)
    assert len(games) == 134
    first_six = {alfworld.task_type(g) for g in games[:6]}
    assert first_six == set(alfworld.TASK_PREFIXES.values())   # types interleaved
    prompts = alfworld.load_prompts(data_root)
    assert prompts["heat"].startswith(alfworld.INTRO) and prompts["heat"].endswith(alfworld.OUTRO)


@pytest.mark.slow
def test_expert_wins_one_game_of_each_type(data_root, tmp_path):
    settings = AgentSettings(tasks=["alfworld"], episodes=6, batch_size=3)
    res = evaluate_agents(None, None, data_root, tmp_path, settings, policy=ScriptedPolicy(), progress=False)
    t = res["tasks"]["alfworld"]
    assert t["n"] == 6 and t["value"] == 100.0, t
    assert set(t["by_type"]) == set(alfworld.TASK_PREFIXES.values())
    assert t["put_aliases"] >= 5           # ReAct's "put X in/on Y" reached the game as "move X to Y"
    assert t["invalid_actions"] == 0


class Fumbler:
    """think, an empty line, a command the game does not know, then a put that is not possible."""

    SCRIPT = [" think: let me look around", "", " fly to the moon", " put apple 1 in/on fridge 1", " look"]

    def complete(self, requests):
        return [self.SCRIPT[min(r.episode.calls, len(self.SCRIPT) - 1)] for r in requests]


@pytest.mark.slow
def test_bad_actions_are_observations(data_root):
    ep = alfworld.make_episodes(data_root, 1, repeat_limit=3)[0]
    records, _ = run_episodes([ep], Fumbler(), progress=False)
    steps = records[0]["steps"]
    assert [s["observation"] for s in steps[:4]] == ["OK.", "Nothing happens.", "Nothing happens.",
                                                     "Nothing happens."]
    assert records[0]["stop_reason"] == "repeated_action"
    assert records[0]["success"] == 0.0
