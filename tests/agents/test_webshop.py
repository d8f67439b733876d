"""WebShop without its product catalogue: the adapter against a local stand-in of the WebShop site (same routes
and page structure as the `webshop` package's Flask app: buttons, option labels, product links, the score
page), with instructions taken from the data root's human_goals.json. The real catalogue is not here; this
checks the HTTP routes, the page-to-observation conversion, the session state machine and the scoring."""

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("bs4")

from xmodel.eval.agents import webshop  # noqa: E402
from xmodel.eval.agents.loop import ScriptedPolicy, run_episodes  # noqa: E402

ASINS = ["B078GWRC1J", "B078GTKVXY", "B08KBVJ4XN", "B0000000X4"]


def page(instruction: str, body: str) -> str:
    return (f"<html><head><title>WebShop</title><style>p{{}}</style></head><body>"
            f"<div><h4>Instruction:</h4><p>{instruction}</p></div>{body}</body></html>")


class StandIn(BaseHTTPRequestHandler):
    goals: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = [urllib.parse.unquote(p) for p in self.path.strip("/").split("/")]
        goal = self.goals[int(parts[-1].split("_")[-1]) if parts[0].startswith("fixed_") else 0]
        if parts[0].startswith("fixed_"):
            html = page(goal, "<form><input name='search_query'><button>Search</button></form>")
        elif parts[0] == "search_results":
            items = "".join(f"<div><a class='product-link'>{a}</a><h4>Product {a}</h4><h5>$10.99</h5></div>"
                            for a in ASINS)
            html = page(goal, f"<button>Back to Search</button><h5>Page 1 (Total results: 4)</h5>"
                              f"<button>Next &gt;</button>{items}")
        elif parts[0] == "item_page":
            html = page(goal, "<button>Back to Search</button><button>&lt; Prev</button>"
                              "<h4>size</h4><label>3 ounce (pack of 1)</label><label>travel set (4-pack)</label>"
                              "<h2>Bright Citrus Deodorant</h2><h4>Price: $10.99</h4>"
                              "<button>Description</button><button>Buy Now</button>")
        elif parts[0] == "done":
            options = parts[3]
            score = "1.0" if "3 ounce (pack of 1)" in options and parts[2] == ASINS[0] else "0.25"
            html = page(goal, f"<h3>Your score (min 0.0, max 1.0)</h3><h3>{score}</h3>")
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = html.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def site(data_root):
    StandIn.goals = webshop.load_goals(data_root)[:3]
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield webshop.WebShopHTTP(f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()


def test_goal_file(data_root):
    goals = webshop.load_goals(data_root)
    assert len(goals) == 12087 and all(g.strip() for g in goals[:100])


def test_purchase_scored_and_invalid_actions(site):
    good, bad = webshop.make_episodes(site, "PROMPT\n", 2)
    good.oracle_actions = ["search[3 ounce bright citrus deodorant]", "click[B0000000X4]", "click[< Prev]",
                           f"click[{ASINS[0]}]", "click[3 ounce (pack of 1)]", "click[Buy Now]"]
    bad.oracle_actions = ["click[Buy Now]", "search[deodorant]", "search[again]", "click[NOPE]",
                          "think[hmm]", f"click[{ASINS[1]}]", "click[Buy Now]"]
    records, _ = run_episodes([good, bad], ScriptedPolicy(), progress=False)
    g, b = records
    assert g["success"] == 1.0 and g["score"] == 1.0 and g["stop_reason"] == "finished"
    assert g["steps"][0]["observation"].startswith("[Back to Search]")
    assert "[B078GWRC1J]" in g["steps"][0]["observation"]
    assert "[B0000000X4]" not in g["steps"][0]["observation"]          # ReAct shows three products
    assert g["steps"][4]["observation"] == "You have clicked 3 ounce (pack of 1)."
    assert "[[3 ounce (pack of 1)]]" not in g["steps"][3]["observation"]
    assert g["steps"][5]["observation"] == "Your score (min 0.0, max 1.0): 1.0"
    assert [s["observation"] for s in b["steps"][:5]] == ["Invalid action!", b["steps"][1]["observation"],
                                                          "Invalid action!", "Invalid action!", "OK."]
    assert b["success"] == 0.0 and b["score"] == 0.25
    assert g["prompt"].startswith("WebShop") or "Instruction:" in g["prompt"]


def test_observation_marks_selected_options():
    html = page("find soap", "<h4>size</h4><label>small</label><label>large</label><button>Buy Now</button>")
    obs = webshop.page_to_observation(html, "item", {"size": "large"})
    assert "[small][[large]]" in obs.observation
    assert obs.options == {"small": "size", "large": "size"} and obs.buttons == ["Buy Now"]


def test_unreachable_site_ends_episodes_not_the_run():
    episodes = webshop.make_episodes(webshop.WebShopHTTP("http://127.0.0.1:9", timeout=2), "PROMPT\n", 2)
    records, _ = run_episodes(episodes, ScriptedPolicy(), progress=False)
    assert [r["stop_reason"] for r in records] == ["environment_error"] * 2
    assert all(r["start_error"] and r["success"] == 0.0 for r in records)
