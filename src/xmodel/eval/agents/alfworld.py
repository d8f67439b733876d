"""AlfWorld through its real packages: TextWorld plays the data root's ``game.tw-pddl`` files.

The data root holds the 134 valid_unseen games (ReAct's ``eval_out_of_distribution`` set) without ALFRED's
``traj_data.json``, so the games are registered with TextWorld directly, with alfworld's `AlfredDemangler`
(object names such as ``apple 2``) and `AlfredInfos`, as alfworld's own `AlfredTWEnv` does minus its file
collector. One TextWorld env per episode, so episodes can run side by side.

ReAct's protocol (alfworld.ipynb): two task-type examples from ``alfworld_3prompts.json`` (``react_{type}_1``
then ``react_{type}_0``), the observation after the welcome banner, then ``> action`` lines, stop at a newline,
``think: …`` answered ``OK.`` without touching the game, ``You arrive at …. `` trimmed from observations, at
most 49 actions; success = TextWorld's ``won``.

These game files use alfworld ≥ 0.3's command ``move X to Y`` where ReAct's prompts (written for 0.2) say
``put X in/on Y``; the adapter sends the admissible ``move`` form for a ``put`` (counted in the trace), so a
model that follows the prompts is not failed by the version change. The scripted expert follows TextWorld's
PDDL planner (``policy_commands``) and writes its moves in the prompts' ``put`` form, exercising that path.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import XmodelError
from .actions import first_line
from .loop import Episode, Request, Step

MAX_ACTIONS = 49
# ALFRED task-type folder prefix → the key stem of ReAct's prompts.
TASK_PREFIXES = {"pick_and_place": "put", "pick_clean_then_place": "clean", "pick_heat_then_place": "heat",
                 "pick_cool_then_place": "cool", "look_at_obj": "examine", "pick_two_obj": "puttwo"}
# ReAct's framing around the two examples (alfworld.ipynb), verbatim.
INTRO = "Interact with a household to solve a task. Here are two examples.\n"
OUTRO = "\nHere is the task.\n"
_PUT = re.compile(r"^put (.+?) (?:in/on|in|on) (.+)$")


def require_alfworld():
    try:
        import textworld  # noqa: F401
        import textworld.gym  # noqa: F401
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos  # noqa: F401
    except ImportError as e:
        raise XmodelError(f"AlfWorld needs the optional packages: pip install 'xmodel[alfworld]' ({e})") from None


def alfworld_available() -> bool:
    try:
        require_alfworld()
        return True
    except XmodelError:
        return False


def game_files(data_root: Path, split: str = "valid_unseen") -> list[Path]:
    """The split's games, task types interleaved (so the first n of them cover every type)."""
    root = Path(data_root) / "eval" / "alfworld" / "json_2.1.1" / split
    files = sorted(root.glob("*/*/game.tw-pddl"))
    if not files:
        raise XmodelError(f"{root}: no */*/game.tw-pddl AlfWorld games found")
    by_type: dict[str, list[Path]] = {}
    for f in files:
        by_type.setdefault(task_type(f), []).append(f)
    queues = [by_type[k] for k in TASK_PREFIXES.values() if k in by_type]
    out = []
    for i in range(max(len(q) for q in queues)):
        out += [q[i] for q in queues if i < len(q)]
    return out


def task_type(game: Path) -> str:
    name = game.parent.parent.name
    for prefix, key in TASK_PREFIXES.items():
        if name.startswith(prefix):
            return key
    raise XmodelError(f"{game}: unknown AlfWorld task type {name!r}")


def load_prompts(data_root: Path) -> dict[str, str]:
    path = Path(data_root) / "eval" / "react" / "prompts" / "alfworld_3prompts.json"
    if not path.is_file():
        raise XmodelError(f"{path}: ReAct prompt file not found")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        return {key: INTRO + d[f"react_{key}_1"] + d[f"react_{key}_0"] + OUTRO for key in TASK_PREFIXES.values()}
    except (json.JSONDecodeError, KeyError) as e:
        raise XmodelError(f"{path}: not ReAct's alfworld prompts ({e})") from None


def make_env(game: Path, expert: bool):
    """A TextWorld gym env over one game; ``expert`` also asks the PDDL planner for the remaining plan."""
    import textworld
    import textworld.gym
    from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos

    infos = textworld.EnvInfos(won=True, admissible_commands=True, policy_commands=expert, extras=["gamefile"])
    env_id = textworld.gym.register_games([str(game)], infos, batch_size=1, asynchronous=False,
                                          max_episode_steps=MAX_ACTIONS + 1,
                                          wrappers=[AlfredDemangler(), AlfredInfos])
    return textworld.gym.make(env_id)


def process_observation(ob: str) -> str:
    if ob.startswith("You arrive at "):   # ReAct trims "You arrive at loc N. " (our files: "… at desk 2. ")
        ob = ob[ob.find(". ") + 2:] if ". " in ob else ob
    return ob


@dataclass
class AlfWorldEpisode(Episode):
    game: Path | None = None
    expert: bool = False
    env: object = None
    won: bool = False
    admissible: list[str] = field(default_factory=list)
    plan: list[str] = field(default_factory=list)
    put_aliases: int = 0
    goal: str = ""

    def start(self) -> None:
        self.task, self.uid = "alfworld", "/".join(self.game.parts[-3:-1])
        self.env = make_env(self.game, self.expert)
        obs, info = self.env.reset()
        self._update(info)
        ob = "\n".join(obs[0].split("\n\n")[1:])
        self.goal = ob.split("Your task is to: ")[-1].strip() if "Your task is to: " in ob else ""
        self.text = ob + "\n>"

    def _update(self, info: dict) -> None:
        self.won = bool(info["won"][0])
        self.admissible = list(info["admissible_commands"][0] or [])
        if self.expert:
            self.plan = list((info.get("policy_commands") or [[]])[0] or [])

    def request(self) -> Request:
        return Request(self.prefix, self.text, ["\n"], self)

    def command_for(self, action: str) -> str:
        """The game command to send: ``put A in/on B`` becomes the admissible ``move A to B``."""
        m = _PUT.match(action)
        if m and action not in self.admissible:
            move = f"move {m.group(1)} to {m.group(2)}"
            if move in self.admissible:
                self.put_aliases += 1
                return move
        return action

    def receive(self, completion: str) -> None:
        action = first_line(completion)
        if action.startswith("think:"):
            observation = "OK."
        elif not action:
            observation = "Nothing happens."
        else:
            try:
                obs, _, done, info = self.env.step([self.command_for(action)])
            except Exception as e:  # a game engine failure ends this episode, never the run
                self.steps.append(Step(None, action, f"(environment error: {type(e).__name__})", [completion]))
                self.finish("environment_error")
                return
            self._update(info)
            observation = process_observation(obs[0])
            if done[0] and self.won:
                self.finish("finished")
        self.text += f" {action}\n{observation}\n>"
        self.steps.append(Step(None, action, observation, [completion]))
        self.after_step()

    def scores(self) -> dict:
        return {"success": float(self.won)}

    def details(self) -> dict:
        return {"game": str(self.game), "task_type": task_type(self.game), "goal": self.goal,
                "put_aliases": self.put_aliases}

    def oracle_completion(self) -> str:
        if not self.plan:
            return " look"
        move = self.plan[0]
        if move.startswith("move "):   # written the way ReAct's prompts write it
            obj, _, recep = move[len("move "):].partition(" to ")
            move = f"put {obj} in/on {recep}"
        return f" {move}"

    def close(self) -> None:
        if self.env is not None:
            self.env.close()


def make_episodes(data_root: Path, n: int | None = None, expert: bool = False, repeat_limit: int = 5,
                  max_steps: int = MAX_ACTIONS) -> list[AlfWorldEpisode]:
    require_alfworld()
    prompts = load_prompts(data_root)
    games = game_files(data_root)[:n]
    return [AlfWorldEpisode(prefix=prompts[task_type(g)], game=g, expert=expert, max_steps=max_steps,
                            repeat_limit=repeat_limit) for g in games]
