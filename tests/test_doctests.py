"""The examples in the modules' docstrings run and print what they show (``doctest``), so the docs cannot drift
from the code. Examples that need a trained model or a server are marked ``+SKIP`` where they are written."""

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import ownlm

ALL = sorted(
    m.name for m in pkgutil.walk_packages(ownlm.__path__, "ownlm.") if not m.name.endswith("__main__")
)
SOURCE = Path(ownlm.__file__).parent


def runnable_examples(name: str) -> int:
    """How many ``>>>`` lines in the module's file are not marked ``+SKIP`` (read without importing it)."""
    rel = Path(*name.split(".")[1:])
    path = SOURCE / rel / "__init__.py" if (SOURCE / rel).is_dir() else SOURCE / rel.with_suffix(".py")
    lines = path.read_text(encoding="utf-8").splitlines()
    return sum(1 for line in lines if line.lstrip().startswith(">>> ") and "+SKIP" not in line)


# Only modules with an example that runs are a test: one whose examples are all skipped (or that has none)
# would pass without checking anything.
MODULES = [n for n in ALL if runnable_examples(n)]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as e:  # an optional extra that is not installed here
        pytest.skip(f"{name} needs {e.name}, which is not installed")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed"
    assert result.attempted > 0, f"{name}: its examples were found in the file but doctest ran none"


def test_the_modules_have_examples():
    """Guards the test above against finding nothing (a wrong package path would pass every case)."""
    assert len(ALL) > 40 and len(MODULES) > 20
    assert "ownlm.extract.limits" in MODULES  # runnable examples
    assert "ownlm.train.trainer" not in MODULES  # its examples are all +SKIP
    attempted = sum(doctest.testmod(importlib.import_module(n), verbose=False, report=False).attempted
                    for n in ("ownlm.extract.whatsapp_dates", "ownlm.extract.limits", "ownlm.finetune.classify_data"))  # fmt: skip
    assert attempted >= 5
