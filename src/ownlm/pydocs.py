"""The embedded default corpus: the English documentation that ships inside every Python installation.

Two sources, both read at run time (no download, works offline everywhere):

* ``pydoc_data.topics`` — the language reference texts behind ``help("if")``, one document per topic;
* the docstrings of the standard library — one document per module: the module's docstring, then each
  public class and function defined there (with its signature) and each public method of those classes.

Only the standard library's own folders are walked (never site-packages), private modules and modules with
side effects on import (``antigravity`` opens a browser, ``this`` prints, GUIs, test suites) are skipped,
and the collection runs in a child Python so importing ~300 modules leaves the caller untouched. The order
is fixed (topics sorted by name, modules sorted by dotted name, members in definition order), so the same
Python version always gives the same bytes.

>>> docs = collect_documents()  # doctest: +SKIP
>>> docs[0]["id"], len(docs)  # doctest: +SKIP
('python-docs/topic/assert', 900)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ownlm.config import opt, save_config
from ownlm.errors import UserError

# Top-level names never imported: side effects (browser, printing, GUI windows, grammar caches written into
# the stdlib folder), test suites and demo scripts.
SKIP_TOP = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test", "lib2to3", "ensurepip",
    "pydoc_data", "site", "sitecustomize", "usercustomize", "xxlimited", "xxlimited_35", "xxsubtype",
}  # fmt: skip
SKIP_PARTS = {"__main__", "test", "tests", "idle_test"}


@dataclass
class PythonDocsConfig:
    """Write Python's own documentation (reference topics + standard-library docstrings) as documents JSONL."""

    out: str = opt(help="output folder; DIR/docs.jsonl is written there")
    topics: bool = opt(True, help="include the language reference topics from pydoc_data")
    modules: bool = opt(True, help="include the docstrings of the standard-library modules")
    min_chars: int = opt(200, help="skip modules whose collected documentation is shorter than this")
    instructions: bool = opt(
        True,
        help="also write question -> answer pairs from the documentation: DIR/instructions/{train,val}.jsonl",
    )
    val_fraction: float = opt(
        0.1, help="share of the question -> answer pairs held out (chosen by hash)", bounds="[0, 1)"
    )


def _stdlib_dirs() -> list[str]:
    """The folders holding the standard library (pure-Python and compiled), never site-packages."""
    import sysconfig

    paths = sysconfig.get_paths()
    dirs = [paths["stdlib"], os.path.join(paths["platstdlib"], "lib-dynload")]
    dirs.append(os.path.join(paths["stdlib"], "lib-dynload"))
    return sorted({d for d in dirs if os.path.isdir(d)})


def stdlib_module_names() -> list[str]:
    """Dotted names of the public standard-library modules, sorted, found without importing anything."""
    import pkgutil

    names: set[str] = {n for n in sys.builtin_module_names if not n.startswith("_")}

    def walk(path: str, prefix: str) -> None:
        for info in pkgutil.iter_modules([path]):
            name = info.name
            if name.startswith("_") or name in SKIP_PARTS or (not prefix and name in SKIP_TOP):
                continue
            names.add(prefix + name)
            if info.ispkg:
                walk(os.path.join(path, name), prefix + name + ".")

    for d in _stdlib_dirs():
        walk(d, "")
    return sorted(names - SKIP_TOP)


def _doc(obj) -> str:
    """An object's own docstring, cleaned (``inspect.getdoc`` would copy a base class's text onto overrides)."""
    import inspect

    doc = obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else None
    return inspect.cleandoc(doc) if doc else ""


class _Elided:
    def __repr__(self) -> str:
        return "..."


def _plain_default(value) -> bool:
    """Whether a default value may be shown: a short literal that is the same on every machine."""
    if value is None or isinstance(value, bool | int | float):
        return True
    if isinstance(value, str | bytes):
        text = value if isinstance(value, str) else value.decode("latin-1")
        return len(text) <= 40 and not os.path.isabs(text)  # sys.executable, home folders: not ours to ship
    if isinstance(value, tuple | frozenset):
        return len(value) <= 8 and all(_plain_default(v) for v in value)
    return False


def _signature(obj) -> str:
    """``(a, b=1, env=...)``: defaults that are objects (``os.environ``!), paths or long values are elided, so
    no machine's environment, paths or memory addresses end up in the corpus."""
    import inspect

    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return "(...)"
    params = [
        p if p.default is p.empty or _plain_default(p.default) else p.replace(default=_Elided())
        for p in sig.parameters.values()
    ]
    return str(sig.replace(parameters=params))


def module_text(module) -> str:
    """The documentation of one module as plain text: its docstring, then its classes and functions."""
    import inspect

    name = module.__name__
    parts = [f"Module {name}\n\n{_doc(module)}".rstrip()]
    for attr, obj in list(vars(module).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != name:
            continue
        if inspect.isclass(obj):
            block = [f"class {name}.{attr}{_signature(obj)}", _doc(obj)]
            for meth, member in list(vars(obj).items()):
                if meth.startswith("_") or not callable(member):
                    continue
                doc = _doc(member)
                if doc:
                    block.append(f"{attr}.{meth}{_signature(member)}\n{doc}")
            parts.append("\n\n".join(b for b in block if b).rstrip())
        elif inspect.isfunction(obj) or inspect.isbuiltin(obj):
            doc = _doc(obj)
            if doc:
                parts.append(f"{name}.{attr}{_signature(obj)}\n{doc}")
    return "\n\n".join(parts).strip() + "\n"


def _collect_modules(min_chars: int) -> list[dict]:
    import importlib
    import warnings

    docs = []
    for name in stdlib_module_names():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecated modules (imp, asyncore, ...) warn on import
            try:
                module = importlib.import_module(name)
                text = module_text(module)
            except BaseException:  # noqa: BLE001 — a module that cannot be imported here is simply skipped
                continue
        if len(text) >= min_chars:
            docs.append(_record(f"module/{name}", text, f"python:{name}", kind="module"))
    return docs


def _record(key: str, text: str, source: str, kind: str) -> dict:
    version = "{}.{}".format(*sys.version_info[:2])
    return {
        "id": f"python-docs/{key}",
        "text": text,
        "source": source,
        "meta": {"kind": kind, "python": version},
    }


def _collect_topics() -> list[dict]:
    from pydoc_data.topics import topics

    return [
        _record(f"topic/{key}", topics[key].strip() + "\n", f"pydoc_data.topics:{key}", kind="topic")
        for key in sorted(topics)
    ]


def _child(out_path: str, topics: bool, modules: bool, min_chars: int) -> None:
    """Run in a fresh interpreter: collect everything and write JSONL to ``out_path``."""
    docs = (_collect_topics() if topics else []) + (_collect_modules(min_chars) if modules else [])
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        for d in docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def collect_documents(topics: bool = True, modules: bool = True, min_chars: int = 200) -> list[dict]:
    """All documents, in a fixed order. Imports happen in a child process so the caller stays clean.

    >>> docs = collect_documents(modules=False)  # doctest: +SKIP
    >>> docs[0]["meta"]["kind"]  # doctest: +SKIP
    'topic'
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ownlm-pydocs-") as tmp:
        out = os.path.join(tmp, "docs.jsonl")
        code = "import sys, ownlm.pydocs as p; p._child(sys.argv[1], sys.argv[2] == '1', sys.argv[3] == '1', int(sys.argv[4]))"
        # A minimal environment: the same output everywhere, nothing of the user's environment can leak into
        # the corpus, and no DISPLAY for anything to open a window on.
        env = {
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), *sys.path]),
            "PYTHONHASHSEED": "0",
            "PATH": os.defpath,
            "LC_ALL": "C.UTF-8",
            "HOME": tmp,
        }
        if "SYSTEMROOT" in os.environ:  # Windows: Python cannot start its crypto and sockets without it
            env["SYSTEMROOT"] = os.environ["SYSTEMROOT"]
        args = [sys.executable, "-c", code, out, str(int(topics)), str(int(modules)), str(min_chars)]
        proc = subprocess.run(
            args,
            env=env,
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if proc.returncode != 0 or not os.path.isfile(out):
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
            raise UserError("could not collect the Python documentation: " + " | ".join(tail))
        with open(out, encoding="utf-8") as f:
            return [json.loads(line) for line in f]


def _first_paragraph(text: str, limit: int = 400) -> str:
    """The first paragraph of ``text`` on one line, cut at a sentence end near ``limit`` characters."""
    para = " ".join(text.strip().split("\n\n")[0].split())
    if len(para) > limit:
        cut = para.rfind(". ", 0, limit)
        para = para[: cut + 1] if cut > limit // 3 else para[:limit].rsplit(" ", 1)[0] + " ..."
    return para


def _looks_like_code(text: str) -> bool:
    t = text.strip()
    first = t.split("\n", 1)[0]
    return (t.startswith(("Traceback", ">>>", "...")) or "->" in first
            or bool(first.endswith(")") and "(" in first and " " not in first.split("(", 1)[0]))  # fmt: skip


def instruction_examples(docs: list[dict]) -> list[dict]:
    r"""Question -> answer pairs (Alpaca form) built from the documentation: for each reference topic "Explain
    the "for" statement." answered with its first paragraph, and for each documented standard-library function
    "What does `json.dumps` do?" answered with the first paragraph of its docstring.

    >>> instruction_examples([{"meta": {"kind": "topic"}, "text": 'The "pass" statement\n****\n\n"pass" is a null operation.'}])
    [{'instruction': 'Explain the "pass" statement.', 'input': '', 'output': '"pass" is a null operation.'}]
    """
    import re

    out, seen = [], set()
    for d in docs:
        kind, text = d.get("meta", {}).get("kind"), d["text"]
        if kind == "topic":
            title, _, rest = text.partition("\n")
            paras = [p for p in rest.lstrip("*=-\n").split("\n\n") if p.strip()]
            while paras and (_looks_like_code(paras[0]) or paras[0].startswith((" ", "*"))):
                paras = paras[1:]
            answer = _first_paragraph(paras[0]) if paras else ""
            if title and len(answer) >= 20 and not _looks_like_code(answer):
                out.append((f"Explain {title[0].lower() + title[1:]}.", answer))
        elif kind == "module":
            for block in text.split("\n\n"):
                m = re.match(r"^([a-z_][\w.]*\.[a-z_]\w*)\(.*\)\n(.+)", block, re.S)
                if m and "." in m.group(1):
                    paras = [p for p in m.group(2).split("\n\n") if p.strip()]
                    while paras and _looks_like_code(paras[0]):  # a signature line or a doctest first
                        paras = paras[1:]
                    answer = _first_paragraph(paras[0]) if paras else ""
                    if len(answer) >= 20 and not _looks_like_code(answer):
                        out.append((f"What does `{m.group(1)}` do?", answer))
    examples = []
    for q, a in out:
        if q not in seen:
            seen.add(q)
            examples.append({"instruction": q, "input": "", "output": a})
    return examples


def main(cfg: PythonDocsConfig) -> int:
    from ownlm.io import prepare_output, sha256_file, write_jsonl, write_manifest

    if not cfg.topics and not cfg.modules:
        raise UserError("nothing to write: --no-topics and --no-modules together leave no documents")
    out = prepare_output(cfg.out, kind="ownlm-python-docs", folder=True)  # the manifest names the kind
    docs = collect_documents(cfg.topics, cfg.modules, cfg.min_chars)
    n = write_jsonl(out / "docs.jsonl", docs)
    chars = sum(len(d["text"]) for d in docs)
    nbytes = (out / "docs.jsonl").stat().st_size
    save_config(cfg, out / "config.json")
    write_manifest(
        out,
        "ownlm-python-docs",
        1,
        python=sys.version.split()[0],
        documents=n,
        topics=sum(d["meta"]["kind"] == "topic" for d in docs),
        modules=sum(d["meta"]["kind"] == "module" for d in docs),
        chars=chars,
        files={"docs.jsonl": {"bytes": nbytes, "sha256": sha256_file(out / "docs.jsonl")}},
    )
    print(f"wrote {out / 'docs.jsonl'}: {n:,} documents, {chars:,} characters ({nbytes / 1e6:.1f} MB)")
    if cfg.instructions:
        from ownlm.finetune.data import split_examples

        pairs = instruction_examples(docs)
        wrapped = [{"messages": [{"role": "user", "content": e["instruction"]}], "pair": e} for e in pairs]
        train, val = split_examples(wrapped, cfg.val_fraction, seed=0)
        write_jsonl(out / "instructions" / "train.jsonl", [w["pair"] for w in train])
        write_jsonl(out / "instructions" / "val.jsonl", [w["pair"] for w in val])
        print(
            f"wrote {out / 'instructions'}: {len(train):,} question -> answer pairs for training, {len(val):,} held out"
        )
    return 0
