"""The examples in the modules' docstrings run and print what they show (``doctest``), so the docs cannot drift
from the code. Examples that need a trained model or a server are marked ``+SKIP`` where they are written."""

import doctest
import importlib
import pkgutil

import pytest

import ownlm

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(ownlm.__path__, "ownlm.") if not m.name.endswith("__main__")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    try:
        module = importlib.import_module(name)
    except ImportError as e:  # an optional extra that is not installed here
        pytest.skip(f"{name} needs {e.name}, which is not installed")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed"


def test_the_modules_have_examples():
    """Guards the test above against finding nothing (a wrong package path would pass every case)."""
    assert len(MODULES) > 40
    attempted = sum(doctest.testmod(importlib.import_module(n), verbose=False, report=False).attempted
                    for n in ("ownlm.extract.whatsapp_dates", "ownlm.extract.limits", "ownlm.finetune.classify_data"))  # fmt: skip
    assert attempted >= 5
