"""ownlm corpus python-docs: the embedded default corpus is big enough, deterministic and stdlib-only."""

from __future__ import annotations

import json
import sys

import pytest

from ownlm.cli import main as cli
from ownlm.pydocs import collect_documents, stdlib_module_names


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return collect_documents()


def test_more_than_a_megabyte_of_documentation(docs):
    assert sum(len(d["text"].encode("utf-8")) for d in docs) > 1_000_000
    kinds = {d["meta"]["kind"] for d in docs}
    assert kinds == {"topic", "module"}
    assert all(d["text"].strip() and set(d) == {"id", "text", "source", "meta"} for d in docs)
    assert len({d["id"] for d in docs}) == len(docs)


def test_deterministic_across_runs(docs):
    again = collect_documents()
    assert again == docs  # a fresh interpreter: same ids, same texts, same order (no memory addresses)


def test_fixed_order_topics_then_modules(docs):
    topics = [d["id"] for d in docs if d["meta"]["kind"] == "topic"]
    modules = [d["id"] for d in docs if d["meta"]["kind"] == "module"]
    assert [d["id"] for d in docs] == topics + modules
    assert topics == sorted(topics) and modules == sorted(modules)


def test_standard_library_only_and_no_side_effects(docs):
    names = {d["id"].removeprefix("python-docs/module/") for d in docs if d["meta"]["kind"] == "module"}
    assert {"json", "os", "collections", "itertools"} <= names  # pure-Python, package and builtin modules
    for not_stdlib in ("numpy", "pytest", "torch", "ownlm", "pip", "setuptools"):
        assert not_stdlib not in names and not any(n.startswith(not_stdlib + ".") for n in names)
    assert not any(part.startswith("_") for n in names for part in n.split("."))
    assert not {"antigravity", "this", "idlelib", "tkinter", "turtle"} & {n.split(".")[0] for n in names}
    assert "antigravity" not in sys.modules  # collection ran in a child interpreter


def test_module_names_found_without_importing():
    before = set(sys.modules)
    names = stdlib_module_names()
    assert "json.decoder" in names and "email.mime.text" in names
    assert not [n for n in names if n.split(".")[-1] in ("__main__", "test", "tests")]
    imported = set(sys.modules) - before
    assert not imported & {"wave", "xml.dom.minidom", "email.mime.text", "json.tool", "turtle", "antigravity"}


def test_cli_writes_documents_jsonl(tmp_path, capsys):
    assert cli(["corpus", "python-docs", "--out", str(tmp_path / "pd"), "--no-modules"]) == 0
    lines = (tmp_path / "pd" / "docs.jsonl").read_text(encoding="utf-8").splitlines()
    recs = [json.loads(line) for line in lines]
    manifest = json.loads((tmp_path / "pd" / "manifest.json").read_text())
    assert (
        manifest["format"] == "ownlm-python-docs" and manifest["documents"] == len(recs) == manifest["topics"]
    )
    assert "documents" in capsys.readouterr().out
    assert cli(["corpus", "python-docs", "--out", str(tmp_path / "x"), "--no-modules", "--no-topics"]) == 2


def test_nothing_of_this_machine_leaks_into_the_text(monkeypatch, tmp_path):
    monkeypatch.setenv("OWNLM_TEST_SECRET", "s3cr3t-sentinel-value")
    monkeypatch.chdir(tmp_path)
    docs = collect_documents(topics=False)
    text = "\n".join(d["text"] for d in docs)
    assert "s3cr3t-sentinel-value" not in text  # os.environ as a default value is elided
    assert sys.executable not in text and str(tmp_path) not in text
