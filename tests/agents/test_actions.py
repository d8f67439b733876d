"""Action parsing: every malformed form gives a defined observation, never an exception escaping the env."""

import pytest

from xmodel.eval.agents.actions import MAX_ARGUMENT_CHARS, Action, InvalidAction, parse_action
from xmodel.eval.agents.wiki import WIKI_VERBS

VERBS = {"search": "entity", "lookup": "keyword", "finish": "answer"}


@pytest.mark.parametrize("text, expected", [
    ("Search[Ed Wood]", Action("search", "Ed Wood")),
    ("search[Ed Wood]", Action("search", "Ed Wood")),
    ("  FINISH[ yes ]  ", Action("finish", "yes")),
    ("\n\nFinish[NOT ENOUGH INFO]\nObservation", Action("finish", "NOT ENOUGH INFO")),  # first non-empty line
    ("Search[Soul Food [film]]", Action("search", "Soul Food [film]")),
    ("Finish[]", Action("finish", "")),
])
def test_valid_actions(text, expected):
    assert parse_action(text, VERBS) == expected


@pytest.mark.parametrize("text, needle", [
    ("", "empty"),
    ("   \n  ", "empty"),
    ("Search Ed Wood", "missing brackets"),
    ("Search[Ed Wood", "missing closing bracket"),
    ("Jump[high]", "valid actions are search[entity], lookup[keyword], finish[answer]"),
    ("[Ed Wood]", "valid actions"),
    ("Search[" + "x" * (MAX_ARGUMENT_CHARS + 1) + "]", "longer than"),
])
def test_invalid_actions_say_why(text, needle):
    with pytest.raises(InvalidAction) as e:
        parse_action(text, VERBS)
    assert str(e.value).startswith("Invalid action:")
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_overlong_invalid_text_is_shortened_in_the_observation():
    with pytest.raises(InvalidAction) as e:
        parse_action("blah " * 200, WIKI_VERBS)
    assert len(str(e.value)) < 250
