"""The layer picture in README.md ("Layers: who may import whom") holds for every import in src/ownlm: no import
cycle between modules and no import of a higher layer — module-level and function-level imports alike (a
function-local import does not hide an arrow). The test reads the source with ``ast``; nothing is imported."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# Longest prefix wins. Keep in step with the table in README.md.
LAYERS = {
    # 0 base: used by all
    "ownlm": 0,  # the package itself (__version__)
    "ownlm.errors": 0,
    "ownlm.io": 0,
    "ownlm.config": 0,
    # 1 data: documents, conversations, corpus
    "ownlm.extract": 1,
    "ownlm.textsource": 1,
    "ownlm.minhash": 1,
    "ownlm.corpus": 1,
    "ownlm.corpus_stats": 1,
    "ownlm.data": 1,
    "ownlm.data.encode": 2,  # `ownlm encode` turns a corpus into token shards: it needs the tokenizer (layer 2)
    # 2 model, tokenizer, formats: know nothing of tasks
    "ownlm.tokenizer": 2,
    "ownlm.model": 2,
    "ownlm.formats": 2,
    # 3 training and inference: what loops over steps or tokens
    "ownlm.train": 3,
    "ownlm.runtime": 3,
    "ownlm.generate": 3,
    # 4 tasks and apps: one module per job; they register what they add into the layers below
    "ownlm.tasks": 4,
    "ownlm.finetune": 4,
    "ownlm.chat": 4,
    "ownlm.serve": 4,
    "ownlm.export": 4,
    "ownlm.importers": 4,
    "ownlm.pydocs": 4,  # `ownlm corpus python-docs` also writes SFT examples (finetune.data)
    # 5 commands: the command table and the stages chained
    "ownlm.cli": 5,
    "ownlm.__main__": 5,
    "ownlm.pipeline": 5,
    "ownlm.report": 5,  # the build report (pipeline.py's)
}

# Imports allowed against the table, each with the reason. Empty: nothing is excused.
ALLOWED: dict[tuple[str, str], str] = {}


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for path in sorted((SRC / "ownlm").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


def imports(name: str, path: Path, is_pkg: bool, known) -> dict[str, int]:
    """The ownlm modules ``name`` imports anywhere in its file -> the first line doing so."""
    package = name if is_pkg else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from ownlm.model import kinds` imports the submodule; `from ownlm.io import x` the module
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        for t in targets:
            while t and t not in known:  # `import ownlm.model.gpt as g` -> ownlm.model.gpt
                t = t.rpartition(".")[0]
            if t.startswith("ownlm") and t != name:
                found.setdefault(t, node.lineno)
    return found


def layer(name: str) -> int:
    key = max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len, default=None)
    assert key is not None, f"{name}: not in the layer table of tests/test_layers.py (and README.md); add it"
    return LAYERS[key]


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return {n: imports(n, p, pkg, known) for n, (p, pkg) in known.items()}


def test_every_module_has_a_layer(graph):
    for name in graph:
        layer(name)


def test_no_import_of_a_higher_layer(graph):
    upward = [
        f"{src} (layer {layer(src)}) imports {dst} (layer {layer(dst)}) at line {line}"
        for src, targets in graph.items()
        for dst, line in targets.items()
        if layer(dst) > layer(src) and (src, dst) not in ALLOWED
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle(graph):
    # Tarjan's strongly connected components: any component of two or more modules is a cycle
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_what_it_checks(tmp_path):
    """The walker finds function-level and relative imports and resolves submodules (else the tests above
    could pass by seeing nothing)."""
    f = tmp_path / "m.py"
    f.write_text(
        "def f():\n    from ownlm.model import kinds\n    from . import io\n    import ownlm.train.trainer as t\n"
    )
    known = {
        "ownlm",
        "ownlm.io",
        "ownlm.model",
        "ownlm.model.kinds",
        "ownlm.train",
        "ownlm.train.trainer",
        "ownlm.x",
    }
    assert imports("ownlm.x", f, False, known) == {
        "ownlm.model.kinds": 2,
        "ownlm.io": 3,
        "ownlm.train.trainer": 4,
    }
    assert (
        layer("ownlm.model.kinds") == 2
        and layer("ownlm.data.encode") == 2
        and layer("ownlm.data.shards") == 1
    )
