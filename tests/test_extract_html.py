"""HTML main text: boilerplate (bylines, related links, donation boxes, footers, repeated lists) goes, the
article stays; the trafilatura engine and its fallback; the HTML benchmark's scoring."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from ownlm.errors import UserError
from ownlm.extract.base import ExtractOptions, Source
from ownlm.extract.html import HtmlReader, html_to_text

ROOT = Path(__file__).resolve().parents[1]
ARTICLE = [
    "The river rose by two metres overnight, and the town council met at dawn to plan the evacuation.",
    "Volunteers filled sandbags until noon, while the fire brigade pumped water out of the old school.",
    "By the evening the water had started to fall, and most families were allowed back to their homes.",
    "Engineers will inspect the bridge tomorrow; until then, it stays closed to cars and to walkers.",
]


def page(*blocks: str, lead: str = "") -> bytes:
    """A page with a menu, a header, the article's paragraphs inside ``div.body``, then ``blocks``."""
    paras = "".join(f"<p>{p}</p>" for p in ARTICLE)
    return (
        "<html><head><title>Flood</title></head><body>"
        "<div id='top-menu'><a href='/'>Home</a> <a href='/news'>News</a> <a href='/sport'>Sport</a></div>"
        f"<div class='page'><article><h1>Flood in town</h1>{lead}<div class='body'>{paras}</div>"
        + "".join(blocks)
        + "</article></div></body></html>"
    ).encode()


def main_text(data: bytes) -> str:
    return html_to_text(data)[0]


def assert_article_kept(text: str) -> None:
    for p in ARTICLE:
        assert p in text


# --- what goes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block, gone",
    [
        ("<div class='author-box'><p>Jane Doe writes about weather, rivers and towns.</p></div>", "Jane Doe"),
        ("<p class='byline'>By Jane Doe, 3 May</p>", "By Jane Doe"),
        (
            "<div class='donate-box'><p>Support us, give five euros a month, thank you.</p></div>",
            "Support us",
        ),
        ("<div id='footer'><p>Copyright 2024 Town News, all rights reserved.</p></div>", "Copyright 2024"),
        ("<div class='share-buttons'>Share on Mastodon</div>", "Mastodon"),
        ("<form><label>Your e-mail</label> <p>Get our newsletter every week.</p></form>", "newsletter"),
        ("<figure><img src=a.jpg><figcaption>Photo: Agency / J. Smith</figcaption></figure>", "Agency"),
    ],
)
def test_boilerplate_blocks_go_and_the_article_stays(block, gone):
    data = page(block)
    assert gone in html_to_text(data, main_only=False)[0]  # the page holds it ...
    text = main_text(data)
    assert gone not in text  # ... the main text does not
    assert_article_kept(text)
    assert "Home" not in text


def test_related_links_and_their_heading_go():
    related = (
        "<h2>Read more</h2><ul><li><a href=/a>Storm hits the coast again</a></li>"
        "<li><a href=/b>Bridge repairs finished</a></li><li><a href=/c>Council election results</a></li></ul>"
    )
    text = main_text(page(related))
    assert "Storm hits" not in text and "Read more" not in text
    assert_article_kept(text)


def test_a_list_printed_twice_is_kept_once():
    steps = "<ul><li>Close the windows and the doors</li><li>Switch off the power at the mains</li></ul>"
    text = main_text(page(steps, steps))
    assert text.count("Switch off the power at the mains") == 1
    assert_article_kept(text)


def test_comment_section_goes_when_the_article_holds_most_of_the_prose():
    comments = "<div class='comments'><p>Great article, thanks, well written.</p><p>Nice.</p></div>"
    text = main_text(page(comments))
    assert "Great article" not in text
    assert_article_kept(text)


# --- what stays -----------------------------------------------------------------------------------------


def test_lead_paragraph_outside_the_main_block_is_kept():
    lead = "<div class='intro'><p>A night of rain, a morning of work, and an evening of relief.</p></div>"
    text = main_text(page(lead=lead))
    assert text.index("A night of rain") < text.index(ARTICLE[0])
    assert_article_kept(text)


def test_page_without_prose_keeps_its_table_and_list():
    data = (
        b"<body><nav><a href=/>Home</a></nav><table><tr><td>apples</td><td>12</td></tr>"
        b"<tr><td>pears</td><td>7</td></tr></table><ul><li>picked today</li></ul>"
    )
    assert main_text(data) == "apples\t12\npears\t7\n\n- picked today"


def test_main_text_is_drawn_from_the_full_text(shared_data):
    # Property: the heuristic only removes; the main text's words are a sub-multiset of the whole page's.
    from collections import Counter

    for path in sorted((shared_data / "docs" / "html").glob("*.html")):
        data = path.read_bytes()
        everything = Counter(html_to_text(data, main_only=False)[0].split())
        main = Counter(main_text(data).split())
        assert main, path.name
        assert not main - everything, path.name
        assert main.total() < everything.total() or path.name == "textract_standardized_text.html"


def test_fixture_page_headline_kept_menus_gone(shared_data):
    data = (shared_data / "docs" / "html" / "trafilatura_bbc.com.52241221.html").read_bytes()
    text = main_text(data)
    assert "New York ramps up mass burials" in text and "Hart Island" in text
    for menu in ("Skip to content", "Share this with Facebook", "CBeebies", "Related Topics"):
        assert menu not in text


# --- engines ------------------------------------------------------------------------------------------


def fake_trafilatura(monkeypatch, result):
    mod = types.ModuleType("trafilatura")
    calls = []

    def extract(data, **kw):
        calls.append(kw)
        if isinstance(result, Exception):
            raise result
        return result

    mod.extract = extract
    monkeypatch.setitem(sys.modules, "trafilatura", mod)
    return calls


def test_engine_trafilatura_is_used_with_its_evaluation_settings(monkeypatch):
    calls = fake_trafilatura(monkeypatch, "Text from trafilatura.")
    assert html_to_text(page(), engine="trafilatura") == ("Text from trafilatura.", {"title": "Flood"})
    assert calls == [{"include_comments": False, "include_tables": True}]
    assert html_to_text(page(), engine="auto")[0] == "Text from trafilatura."
    # main_only=False is the whole page, whatever the engine
    assert "Home" in html_to_text(page(), main_only=False, engine="auto")[0]


@pytest.mark.parametrize("result", [None, "  ", RuntimeError("boom")])
def test_auto_falls_back_to_ownlm_when_trafilatura_finds_nothing_or_fails(monkeypatch, result):
    fake_trafilatura(monkeypatch, result)
    assert html_to_text(page(), engine="auto")[0] == main_text(page())


def test_engine_when_trafilatura_is_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "trafilatura", None)  # import raises ImportError
    assert html_to_text(page(), engine="auto")[0] == main_text(page())
    with pytest.raises(UserError, match="pip install trafilatura"):
        html_to_text(page(), engine="trafilatura")
    with pytest.raises(ValueError, match="unknown HTML engine"):
        html_to_text(page(), engine="readability")


def test_reader_takes_the_engine_from_the_options(monkeypatch):
    fake_trafilatura(monkeypatch, "From the engine.")
    (doc,) = HtmlReader().read(Source("p.html", page()), ExtractOptions())
    assert doc.text == "From the engine."  # default engine: auto, trafilatura when it is installed
    (doc,) = HtmlReader().read(Source("p.html", page()), ExtractOptions(html_engine="ownlm"))
    assert doc.text == main_text(page())


def test_real_trafilatura_agrees_on_the_fixture_page(shared_data):
    pytest.importorskip("trafilatura")
    data = (shared_data / "docs" / "html" / "trafilatura_bbc.com.52241221.html").read_bytes()
    ours, theirs = main_text(data), html_to_text(data, engine="trafilatura")[0]
    for text in (ours, theirs):
        assert "Hart Island" in text and "CBeebies" not in text


# --- the benchmark's scoring ----------------------------------------------------------------------------


def run_bench(*args: str) -> str:
    cmd = [sys.executable, str(ROOT / "bench" / "bench_html.py"), "--readers", "ours", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=120).stdout


def test_bench_scores_must_have_and_must_not_strings(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "flood.html").write_bytes(page("<div id='footer'>Copyright 2024 Town News</div>"))
    evaldata = {
        "https://example.org/flood": {
            "file": "flood.html",
            "with": ["river rose by two  metres", "not on the page at all"],
            "without": ["Copyright 2024", "Home", "Flood in town"],
        }
    }
    (tmp_path / "evaldata.json").write_text(json.dumps(evaldata))
    out = run_bench("--eval", str(tmp_path))
    row = next(line for line in out.splitlines() if line.startswith("| ownlm"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    # 1 of 2 must-have found (whitespace-normalised match), 2 of 3 must-not absent (the headline is kept)
    assert cells[1:4] == ["1", "50.0 %", "66.7 %"]


def test_bench_without_the_evaluation_set_says_so(tmp_path):
    out = run_bench("--eval", str(tmp_path))
    assert "not here" in out and "skipped" in out
