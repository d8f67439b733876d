"""Wikipedia for ReAct's HotpotQA and FEVER agents: a tool interface, an offline BM25 store, and the episode env.

`WikiTool` is what an episode talks to: ``get(title)`` for an exact page and ``similar(query, k)`` for ranked
titles. `OfflineWikipedia` serves the data root's passage store through SQLite FTS5 (its built-in BM25 ranking,
Porter stemming); `LiveWikipedia` asks the MediaWiki API where a network exists. `WikiEnv` implements ReAct's
action semantics on top of either:

* ``search[entity]`` – an exact title (case-insensitive, ``_`` = space, FEVER's ``-LRB-`` escapes read) gives the
  page's first five sentences; otherwise ``Could not find {entity}. Similar: [up to five titles].``
* ``lookup[keyword]`` – the next sentence of the current page containing the keyword, as ``(Result k / n) …``;
  ``No more results.`` when none is left (a new keyword starts over);
* ``finish[answer]`` – ends the episode with that answer; ``think[…]`` – ``Nice thought.``
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ...errors import XmodelError
from .actions import InvalidAction, parse_action

PAGE_SENTENCES = 5   # ReAct shows the first five sentences of a page
SIMILAR_TITLES = 5
FEVER_ESCAPES = {"-LRB-": "(", "-RRB-": ")", "-LSB-": "[", "-RSB-": "]", "-LCB-": "{", "-RCB-": "}",
                 "-COLON-": ":"}


def fever_unescape(text: str) -> str:
    for code, char in FEVER_ESCAPES.items():
        text = text.replace(code, char)
    return text


def fever_title(page_id: str) -> str:
    """FEVER's page id (``Soul_Food_-LRB-film-RRB-``) as a Wikipedia title (``Soul Food (film)``)."""
    return fever_unescape(page_id.replace("_", " "))


def title_key(title: str) -> str:
    """The form two titles are compared in: NFC, FEVER escapes read, ``_`` as space, whitespace collapsed,
    case-folded (Wikipedia's search lands on a page whatever the query's case)."""
    text = fever_unescape(unicodedata.normalize("NFC", title).replace("_", " "))
    return " ".join(text.split()).casefold()


@dataclass
class Page:
    title: str
    sentences: list[str]
    partial: bool = False  # only some sentences of the real page are known (FEVER evidence lines)
    fever_lines: list[int] | None = None   # for a partial FEVER page: the page's line numbers it holds

    def has_line(self, line: int | None) -> bool:
        """Whether this copy holds FEVER line `line` of the real page (a full page holds every line)."""
        return not self.partial or line is None or line in (self.fever_lines or [])

    def summary(self) -> str:
        return " ".join(self.sentences[:PAGE_SENTENCES])


class WikiTool(Protocol):
    def get(self, title: str) -> Page | None: ...
    def similar(self, query: str, k: int = SIMILAR_TITLES) -> list[str]: ...


def split_sentences(text: str) -> list[str]:
    """ReAct's split of a page into sentences: paragraphs on newlines, sentences on '. '."""
    out = []
    for para in (p.strip() for p in text.split("\n")):
        out += [s.strip() for s in para.split(". ") if s.strip()]
    return [s if s.endswith(".") else s + "." for s in out]


class OfflineWikipedia:
    """The passage store (``eval/react/wiki_passages.jsonl``: {title, sentences, …}) with a BM25 index.

    Titles and texts go into an in-memory SQLite FTS5 table; ``similar`` ranks by FTS5's bm25() with the title
    column weighted ``title_weight`` times the text, which is how Wikipedia's own search favours title matches.
    """

    def __init__(self, path: str | Path, title_weight: float = 5.0):
        path = Path(path)
        if not path.is_file():
            raise XmodelError(f"{path}: passage store not found (expected eval/react/wiki_passages.jsonl "
                              "under the data root)")
        self.path = path
        self.title_weight = title_weight
        self.pages: dict[str, Page] = {}
        rows = []
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    title, sentences = rec["title"], rec["sentences"]
                    if not isinstance(title, str) or not isinstance(sentences, list):
                        raise TypeError
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise XmodelError(f"{path}:{lineno}: not a passage record {{title, sentences}}") from None
                key = title_key(title)
                if key in self.pages:
                    continue
                page = Page(title, [s.strip() for s in sentences if s.strip()], bool(rec.get("partial")),
                            rec.get("fever_lines"))
                self.pages[key] = page
                rows.append((title, " ".join(page.sentences)))
        if not rows:
            raise XmodelError(f"{path}: no passages")
        self.db = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            self.db.execute("CREATE VIRTUAL TABLE pages USING fts5(title, body, "
                            "tokenize='porter unicode61 remove_diacritics 2')")
        except sqlite3.OperationalError as e:
            raise XmodelError(f"this Python's SQLite has no FTS5 module ({e}); the offline Wikipedia needs it"
                              ) from None
        self.db.executemany("INSERT INTO pages(title, body) VALUES (?, ?)", rows)
        self.db.commit()

    def __len__(self) -> int:
        return len(self.pages)

    def __contains__(self, title: str) -> bool:
        return title_key(title) in self.pages

    def get(self, title: str) -> Page | None:
        return self.pages.get(title_key(title))

    def similar(self, query: str, k: int = SIMILAR_TITLES) -> list[str]:
        terms = re.findall(r"\w+", unicodedata.normalize("NFC", fever_unescape(query)).lower())
        if not terms:
            return []
        # Every term quoted (FTS5 syntax characters in a query are then plain text), any term may match.
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in dict.fromkeys(terms))
        rows = self.db.execute("SELECT title FROM pages WHERE pages MATCH ? ORDER BY bm25(pages, ?, 1.0) "
                               "LIMIT ?", (match, self.title_weight, k)).fetchall()
        return [r[0] for r in rows]


class LiveWikipedia:
    """The same two calls against the MediaWiki API (needs a network; not used offline).

    ``get`` follows redirects and returns the plain-text extract split the ReAct way; ``similar`` is the API's
    full-text search. Disambiguation pages are returned as pages, as the API gives them.
    """

    API = "https://en.wikipedia.org/w/api.php"

    def __init__(self, timeout: float = 10.0, session=None):
        import requests

        self.session = session or requests.Session()
        self.timeout = timeout

    def _query(self, **params) -> dict:
        params.update(action="query", format="json", formatversion=2)
        response = self.session.get(self.API, params=params, timeout=self.timeout)
        response.raise_for_status()
        return response.json()

    def get(self, title: str) -> Page | None:
        data = self._query(prop="extracts", explaintext=1, redirects=1, titles=title)
        pages = data.get("query", {}).get("pages", [])
        if not pages or pages[0].get("missing") or not pages[0].get("extract"):
            return None
        return Page(pages[0]["title"], split_sentences(pages[0]["extract"]))

    def similar(self, query: str, k: int = SIMILAR_TITLES) -> list[str]:
        data = self._query(list="search", srsearch=query, srlimit=k)
        return [hit["title"] for hit in data.get("query", {}).get("search", [])]


WIKI_VERBS = {"search": "entity", "lookup": "keyword", "finish": "answer", "think": "thought"}


@dataclass
class WikiEnv:
    """One HotpotQA/FEVER episode's view of Wikipedia (ReAct's WikiEnv semantics over a `WikiTool`)."""

    tool: WikiTool
    page: Page | None = None
    answer: str | None = None
    lookup_keyword: str | None = None
    lookup_hits: list[str] = field(default_factory=list)
    lookup_next: int = 0
    tool_seconds: float = 0.0
    pages_seen: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.answer is not None

    def step(self, text: str) -> str:
        """Apply one action written by the agent; returns the observation (never raises on bad text)."""
        if self.done:
            return "Episode already finished."
        try:
            action = parse_action(text, WIKI_VERBS)
        except InvalidAction as e:
            return str(e)
        if action.verb == "search":
            return self.search(action.argument)
        if action.verb == "lookup":
            return self.lookup(action.argument)
        if action.verb == "think":
            return "Nice thought."
        self.answer = action.argument
        return "Episode finished."

    def search(self, entity: str) -> str:
        start = time.perf_counter()
        try:
            page = self.tool.get(entity) if entity else None
            similar = [] if page is not None else (self.tool.similar(entity) if entity else [])
        finally:
            self.tool_seconds += time.perf_counter() - start
        if page is None:
            return f"Could not find {entity}. Similar: {similar}."
        self.page = page
        self.pages_seen.append(page.title)
        self.lookup_keyword, self.lookup_hits, self.lookup_next = None, [], 0
        return page.summary()

    def lookup(self, keyword: str) -> str:
        if keyword != self.lookup_keyword:
            self.lookup_keyword = keyword
            needle = keyword.lower()
            self.lookup_hits = [s for s in (self.page.sentences if self.page else []) if needle in s.lower()]
            self.lookup_next = 0
        if self.lookup_next >= len(self.lookup_hits):
            return "No more results."
        self.lookup_next += 1
        return f"(Result {self.lookup_next} / {len(self.lookup_hits)}) {self.lookup_hits[self.lookup_next - 1]}"
