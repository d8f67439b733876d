"""Reading an action such as ``Search[Ed Wood]`` out of whatever a model wrote.

Models write malformed actions; each way of failing becomes an `InvalidAction` whose message is the
observation the agent sees next, so a bad action costs a step and never ends the run. The rules are ReAct's
(``verb[argument]``, the argument verbatim) with two allowances its reference code lacks: the verb is matched
case-insensitively (ReAct lower-cases only the first letter) and only the first non-empty line counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ARGUMENT_CHARS = 300  # a longer argument is a runaway generation, not a query
_ACTION = re.compile(r"^([A-Za-z][A-Za-z _-]*?)\s*\[(.*)\]$", re.DOTALL)


@dataclass(frozen=True)
class Action:
    verb: str       # lower case, e.g. "search"
    argument: str   # stripped, otherwise as written

    def __str__(self) -> str:
        return f"{self.verb}[{self.argument}]"


class InvalidAction(ValueError):
    """The text is not a usable action; ``str(e)`` is the observation to show."""


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def usage(verbs: dict[str, str]) -> str:
    return ", ".join(f"{v}[{arg}]" for v, arg in verbs.items())


def parse_action(text: str, verbs: dict[str, str]) -> Action:
    """`verbs` maps each allowed verb to its argument's name (for the help text), e.g. {"search": "entity"}."""
    line = first_line(text)
    if not line:
        raise InvalidAction(f"Invalid action: empty. Valid actions are {usage(verbs)}.")
    shown = line if len(line) <= 80 else line[:77] + "..."
    if "[" not in line:
        raise InvalidAction(f"Invalid action: {shown} (missing brackets; valid actions are {usage(verbs)}).")
    if not line.endswith("]"):
        raise InvalidAction(f"Invalid action: {shown} (missing closing bracket; valid actions are "
                            f"{usage(verbs)}).")
    m = _ACTION.match(line)
    if not m or m.group(1).strip().lower() not in verbs:
        raise InvalidAction(f"Invalid action: {shown} (valid actions are {usage(verbs)}).")
    argument = m.group(2).strip()
    if len(argument) > MAX_ARGUMENT_CHARS:
        raise InvalidAction(f"Invalid action: {shown} (argument longer than {MAX_ARGUMENT_CHARS} characters).")
    return Action(m.group(1).strip().lower(), argument)
