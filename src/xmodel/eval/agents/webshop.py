"""WebShop: a ReAct adapter for the WebShop site served by the ``webshop`` package (princeton-nlp/WebShop).

The site is a Flask app; its routes are the environment's API, and ReAct's WebShop agent talks to them over
HTTP, as this adapter does:

    /<session>                                           start page (instruction + search box)
    /search_results/<session>/<query>/<page>             results (10 per page, ASIN buttons)
    /item_page/<session>/<asin>/<query>/<page>/<options>  product page (option buttons, Buy Now)
    /item_sub_page/<session>/<asin>/<query>/<page>/<sub>/<options>   Description / Features / Reviews
    /done/<session>/<asin>/<options>                     purchase: "Your score (min 0.0, max 1.0)" + reward

A session named ``fixed_<i>`` gets goal i of the server's goal list, so episodes are ``fixed_0`` … and the
server keeps the goals (the catalogue builds them). Pages become ReAct's text observation: buttons as
``[label]``, the selected option as ``[[label]]``, at most three products per results page. Actions are
``search[query]``, ``click[label]`` and ``think[…]``; anything the current page does not offer is answered
``Invalid action!`` (ReAct's observation for it) and costs a step. Success = a purchase scored 1.0; the mean
score is reported too. Running it needs the WebShop server with its product catalogue (see docs/AGENTS.md).
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import XmodelError
from .actions import InvalidAction, parse_action
from .loop import Episode, Request, Step

MAX_ACTIONS = 14                 # ReAct runs 15 rounds, the first being the reset
SUBPAGES = ("Description", "Features", "Reviews", "Attributes")
SCORE_LABEL = "Your score (min 0.0, max 1.0)"
WEBSHOP_VERBS = {"search": "query", "click": "button", "think": "thought"}
HIDDEN_TAGS = {"style", "script", "head", "title", "meta", "[document]"}
PRODUCTS_SHOWN = 3


def require_bs4():
    try:
        import bs4  # noqa: F401
    except ImportError:
        raise XmodelError("WebShop pages are parsed with BeautifulSoup: pip install 'xmodel[webshop]'") from None


@dataclass
class Page:
    observation: str
    buttons: list[str] = field(default_factory=list)        # clickable labels besides options and products
    options: dict[str, str] = field(default_factory=dict)  # option label → its option type (e.g. "size")
    asins: list[str] = field(default_factory=list)
    reward: float | None = None


def page_to_observation(html: str, page_type: str, selected: dict[str, str] | None = None) -> Page:
    """A WebShop HTML page as ReAct's observation text plus what can be clicked on it."""
    from bs4 import BeautifulSoup
    from bs4.element import Comment

    soup = BeautifulSoup(html, "html.parser")
    texts = [t for t in soup.find_all(string=True)
             if t.parent.name not in HIDDEN_TAGS and not isinstance(t, Comment) and str(t).strip()]
    chosen = set((selected or {}).values())
    page = Page("")
    parts: list[str] = []
    option_type, plain_seen, products, since_product = "", 0, 0, 0
    for t in texts:
        s = str(t).strip()
        if t.parent.name == "button":
            parts.append(f"\n[{s}] ")
            page.buttons.append(s)
        elif t.parent.name == "label":
            parts.append(f"[[{s}]]" if s in chosen else f"[{s}]")
            page.options[s] = option_type
        elif "product-link" in (t.parent.get("class") or []):
            parts.append(f"\n[{s}] " if products < PRODUCTS_SHOWN else "")
            products += 1
            page.asins.append(s)
            since_product = 0
        else:
            # The instruction header repeats on every page after the first; ReAct drops its two lines, and the
            # name/price lines of products past the third.
            hide = (plain_seen < 2 and page_type != "init") or (since_product <= 2 and products > PRODUCTS_SHOWN)
            parts.append("" if hide else f"\n{s} ")
            option_type = s
            plain_seen += 1
        since_product += 1
    all_text = [str(t).strip() for t in texts]
    if SCORE_LABEL in all_text:
        i = all_text.index(SCORE_LABEL)
        try:
            page.reward = float(all_text[i + 1])
        except (IndexError, ValueError):
            page.reward = 0.0
        page.observation = f"{SCORE_LABEL}: {page.reward}"
    else:
        page.observation = "".join(parts)
    return page


class WebShopHTTP:
    """The WebShop server's routes (``base_url`` e.g. http://127.0.0.1:3000)."""

    def __init__(self, base_url: str, timeout: float = 30.0, session=None):
        import requests

        self.base = base_url.rstrip("/")
        self.http = session or requests.Session()
        self.timeout = timeout

    def url(self, session: str, page_type: str, query: str = "", page: int = 1, asin: str = "",
            options: dict | None = None, subpage: str = "") -> str:
        q = urllib.parse.quote
        opts = q(str(options or {}), safe="")
        paths = {"init": f"{q(session)}",
                 "search": f"search_results/{q(session)}/{q(query, safe='')}/{page}",
                 "item": f"item_page/{q(session)}/{q(asin)}/{q(query, safe='')}/{page}/{opts}",
                 "item_sub": f"item_sub_page/{q(session)}/{q(asin)}/{q(query, safe='')}/{page}/{q(subpage)}/{opts}",
                 "end": f"done/{q(session)}/{q(asin)}/{opts}"}
        return f"{self.base}/{paths[page_type]}"

    def fetch(self, session: str, page_type: str, **state) -> str:
        response = self.http.get(self.url(session, page_type, **state), timeout=self.timeout)
        response.raise_for_status()
        return response.text


@dataclass
class WebShopEpisode(Episode):
    """ReAct's numbered WebShop format (``prompts/webshop_initial.json``, key ``webthink``)."""

    session: str = ""
    site: WebShopHTTP | None = None
    state: dict = field(default_factory=dict)   # page_type, query, page, asin, options, subpage
    page: Page | None = None
    reward: float = 0.0
    oracle_actions: list[str] = field(default_factory=list)

    def start(self) -> None:
        require_bs4()
        self.task, self.uid = "webshop", self.session
        self.state = {"page_type": "init"}
        self.page = self._load()
        self.text = self.page.observation.lstrip("\n") + "\n\n"

    def _load(self) -> Page:
        st = dict(self.state)
        page_type = st.pop("page_type")
        html = self.site.fetch(self.session, page_type, **st)
        return page_to_observation(html, page_type, st.get("options"))

    @property
    def index(self) -> int:
        return len(self.steps) + 1

    def request(self) -> Request:
        return Request(self.prefix, self.text + f"Action {self.index}:", ["\n"], self)

    def apply(self, text: str) -> str:
        """Move the session as the action says; `InvalidAction` when the page does not offer it."""
        action = parse_action(text, WEBSHOP_VERBS)
        st = self.state
        if action.verb == "think":
            return "OK."
        if action.verb == "search":
            if st["page_type"] != "init":
                raise InvalidAction("Invalid action!")
            self.state = {"page_type": "search", "query": action.argument, "page": 1}
        else:
            button = action.argument
            kind = st["page_type"]
            if button == "Buy Now" and kind == "item":
                st["page_type"] = "end"
            elif button == "Back to Search" and kind in ("search", "item", "item_sub"):
                self.state = {"page_type": "init"}
            elif button == "Next >" and kind == "search" and "Next >" in self.page.buttons:
                st["page"] += 1
            elif button == "< Prev" and kind == "item_sub":
                st["page_type"] = "item"
            elif button == "< Prev" and kind == "item":
                st["page_type"] = "search"
                st.pop("asin", None)
                st["options"] = {}
            elif button == "< Prev" and kind == "search" and st.get("page", 1) > 1:
                st["page"] -= 1
            elif button in SUBPAGES and kind == "item" and button in self.page.buttons:
                st["page_type"], st["subpage"] = "item_sub", button
            elif kind == "search" and button in self.page.asins:
                st.update(page_type="item", asin=button, options={})
            elif kind == "item" and button in self.page.options:
                st.setdefault("options", {})[self.page.options[button]] = button
                return f"You have clicked {button}."
            else:
                raise InvalidAction("Invalid action!")
        self.page = self._load()
        if self.page.reward is not None:
            self.reward = self.page.reward
            self.finish("finished")
        return self.page.observation.strip("\n")

    def receive(self, completion: str) -> None:
        i = self.index
        action = completion.strip().split("\n")[0].strip()
        try:
            observation = self.apply(action)
        except InvalidAction as e:
            observation = "Invalid action!" if str(e) == "Invalid action!" else str(e)
        except OSError as e:   # the server went away: this episode ends, the run goes on
            observation = f"(environment error: {type(e).__name__})"
            self.finish("environment_error")
        self.text += f"Action {i}: {action}\nObservation {i}: {observation}\n\n"
        self.steps.append(Step(None, action, observation, [completion]))
        self.after_step()

    def scores(self) -> dict:
        return {"success": float(self.reward == 1.0), "score": self.reward}

    def details(self) -> dict:
        return {"session": self.session}

    def oracle_completion(self) -> str:
        return f" {self.oracle_actions.pop(0)}" if self.oracle_actions else " click[Back to Search]"


def load_prompt(path: Path) -> str:
    """ReAct's ``webshop_initial.json`` (key ``webthink``); see docs/AGENTS.md for where to get it."""
    if not path.is_file():
        raise XmodelError(f"{path}: WebShop prompt file not found (ReAct's prompts/webshop_initial.json)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))["webthink"]
    except (json.JSONDecodeError, KeyError):
        raise XmodelError(f"{path}: expected ReAct's webshop_initial.json with a 'webthink' prompt") from None


def load_goals(data_root: Path) -> list[str]:
    """The human-written instructions shipped in the data root (``eval/webshop/human_goals.json``)."""
    path = Path(data_root) / "eval" / "webshop" / "human_goals.json"
    if not path.is_file():
        raise XmodelError(f"{path}: WebShop goal file not found")
    goals = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(goals, list) or not all(isinstance(g, str) for g in goals):
        raise XmodelError(f"{path}: expected a JSON list of instruction strings")
    return goals


def make_episodes(site: WebShopHTTP, prompt: str, n: int, start: int = 0, repeat_limit: int = 5,
                  max_steps: int = MAX_ACTIONS) -> list[WebShopEpisode]:
    require_bs4()
    return [WebShopEpisode(prefix=prompt, session=f"fixed_{i}", site=site, max_steps=max_steps,
                           repeat_limit=repeat_limit) for i in range(start, start + n)]
