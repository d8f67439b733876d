"""The offline Wikipedia and ReAct's search/lookup/finish semantics, EM, coverage and retrieval recall, on the
data root's real passage store and question files."""

import pytest

from xmodel.errors import XmodelError
from xmodel.eval.agents import qa
from xmodel.eval.agents.wiki import LiveWikipedia, OfflineWikipedia, WikiEnv, fever_title


def test_store_loads_every_title(wiki):
    assert len(wiki) > 9500
    assert "Scott Derrickson" in wiki


@pytest.mark.parametrize("query", ["Scott Derrickson", "scott derrickson", "Scott_Derrickson", "  Scott   Derrickson "])
def test_exact_title_opens_the_page(wiki, query):
    env = WikiEnv(wiki)
    obs = env.step(f"Search[{query}]")
    assert obs.startswith("Scott Derrickson (born July 16, 1966) is an American director")
    assert env.page.title == "Scott Derrickson"


def test_fever_page_ids_are_read_as_titles(wiki):
    assert fever_title("Soul_Food_-LRB-film-RRB-") == "Soul Food (film)"
    assert WikiEnv(wiki).step("search[Soul_Food_-LRB-film-RRB-]").startswith("Soul Food")


def test_search_miss_lists_similar_titles(wiki):
    obs = WikiEnv(wiki).step("Search[derrickson horror director]")
    assert obs.startswith("Could not find derrickson horror director. Similar: [")
    assert "'Scott Derrickson'" in obs
    assert obs.count("', '") <= 4   # five titles at most


def test_lookup_walks_the_current_page(wiki):
    env = WikiEnv(wiki)
    assert env.step("lookup[horror]") == "No more results."          # no page yet
    env.step("search[Scott Derrickson]")
    first = env.step("lookup[horror]")
    assert first.startswith("(Result 1 / 1) He is best known for directing horror films")
    assert env.step("lookup[horror]") == "No more results."
    assert env.step("lookup[Los Angeles]").startswith("(Result 1 / 1) He lives in Los Angeles")  # new keyword


def test_finish_think_and_bad_actions(wiki):
    env = WikiEnv(wiki)
    assert env.step("think[hmm]") == "Nice thought."
    assert env.step("Search Ed Wood").startswith("Invalid action: Search Ed Wood (missing brackets")
    assert env.step("Finish[yes]") == "Episode finished."
    assert env.done and env.answer == "yes"
    assert env.step("search[Ed Wood]") == "Episode already finished."


def test_bad_passage_file_is_one_line_error(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"title": "A", "sentences": ["x"]}\n{"title": 3}\n')
    with pytest.raises(XmodelError, match=r"p.jsonl:2: not a passage record"):
        OfflineWikipedia(bad)
    with pytest.raises(XmodelError, match="not found"):
        OfflineWikipedia(tmp_path / "missing.jsonl")


class FakeMediaWiki:
    """Answers the two MediaWiki API queries LiveWikipedia makes, as the API's JSON would."""

    class Response:
        def __init__(self, data):
            self.data = data

        def raise_for_status(self):
            pass

        def json(self):
            return self.data

    def get(self, url, params, timeout):
        if params.get("list") == "search":
            return self.Response({"query": {"search": [{"title": "Ed Wood"}, {"title": "Ed Wood (film)"}]}})
        if params["titles"] == "Ed Wood":
            text = "Edward Davis Wood Jr. was an American filmmaker. He made films.\nSecond paragraph here."
            return self.Response({"query": {"pages": [{"title": "Ed Wood", "extract": text}]}})
        return self.Response({"query": {"pages": [{"title": params["titles"], "missing": True}]}})


def test_live_tool_plugs_into_the_same_env():
    env = WikiEnv(LiveWikipedia(session=FakeMediaWiki()))
    assert env.step("search[Ed Wood]") == ("Edward Davis Wood Jr. was an American filmmaker. He made films. "
                                           "Second paragraph here.")
    assert env.step("search[Edd Wod]") == "Could not find Edd Wod. Similar: ['Ed Wood', 'Ed Wood (film)']."


@pytest.mark.parametrize("pred, gold, em", [
    ("The Richard Nixon", "Richard Nixon", True), ("richard nixon.", "Richard Nixon", True),
    ("Nixon", "Richard Nixon", False), ("SUPPORTS", "SUPPORTS", True), ("supports", "REFUTES", False),
    ("NOT ENOUGH INFO", "NOT ENOUGH INFO", True), ("", "yes", False),
])
def test_exact_match_uses_squad_normalisation(pred, gold, em):
    assert qa.exact_match(pred, gold) is em


def test_f1_is_reacts():
    assert qa.f1_score("Richard Nixon", "Richard Nixon") == 1.0
    assert qa.f1_score("Nixon", "Richard Nixon") == pytest.approx(2 / 3)
    assert qa.f1_score("yes", "no") == 0.0


def test_hotpot_sample_is_covered_and_react_sample_reports_coverage(data_root, wiki):
    covered = qa.load_hotpotqa(data_root, wiki, "covered")
    assert len(covered) == 500 and all(it.covered for it in covered)
    react = qa.load_hotpotqa(data_root, wiki, "react", 500)
    summary = qa.coverage_summary(react)
    assert summary["total"] == 500
    assert summary["covered"] < 100 < summary["unknown_or_nei"]   # ReAct's sample is mostly off the store


def test_react_picks_are_reacts_notebook_picks(data_root, wiki):
    """ReAct's notebooks: idxs = list(range(7405)); random.Random(233).shuffle(idxs); for i in idxs[:500]. FEVER.ipynb
    prints its picks: the first eight and the 500th are these indices and claims."""
    assert qa.react_indices(8) == [3687, 6238, 5388, 3522, 3824, 2866, 1551, 2544]
    assert len(qa.react_indices(None)) == 7405 and qa.react_indices(500)[-1] == 4082
    fever = qa.load_fever(data_root, wiki, "react")          # n=None: ReAct's 500
    assert len(fever) == 500
    assert [it.question for it in fever[:3]] == ["Paramore is not from Tennessee.", "Eric Church is a sound mixer.",
                                                 "Victoria Palace Theatre is barely in the West End."]
    assert fever[-1].question == "Bethany Hamilton's biopic was directed by Sean McNamara."
    hotpot = qa.load_hotpotqa(data_root, wiki, "react")
    assert len(hotpot) == 500 and [it.uid for it in hotpot[:3]] == ["dev-3687", "dev-6238", "dev-5388"]


def test_fever_coverage_matches_the_data_kit(data_root, wiki):
    """SOURCES.md: 2,356 paper_dev claims have at least one complete evidence set in the passage store."""
    import json

    n_complete = n_all_titles = 0
    with (data_root / "eval/react/data/paper_dev.jsonl").open() as fh:
        for line in fh:
            rec = json.loads(line)
            sets = qa.fever_evidence_sets(rec)
            n_complete += any(qa.evidence_in_store(s, wiki) for s in sets)
            titles = {t for s in sets for t, _ in s}
            n_all_titles += bool(titles) and all(t in wiki for t in titles)
    assert n_complete == 2356
    assert n_all_titles == 2637


def test_retrieval_recall_on_hotpot(data_root, wiki):
    items = qa.load_hotpotqa(data_root, wiki, "covered", 100)
    r = qa.retrieval_recall(items, wiki, (1, 5, 10))
    assert r["questions"] == 100 and r["gold_titles"] == 200
    assert r["title_hit"] == 1.0                          # search[gold title] always opens the page
    assert r["recall@1"] <= r["recall@5"] <= r["recall@10"]
    assert r["recall@10"] > 0.75                          # BM25 on the question finds most gold pages
