import os
from pathlib import Path

import pytest
from hypothesis import settings

# Hypothesis: no example database (it would write .hypothesis/ into the tree); in CI (the CI variable set, as
# every CI service does) examples are derandomised, so a run is the same on every machine and every retry.
settings.register_profile("dev", database=None)
settings.register_profile("ci", database=None, derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared test data folder beside the repo (../shared/data); tests skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # Two cores and many small tensors: more threads than cores only adds contention.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield


@pytest.fixture
def trainer_clock(monkeypatch):
    """The Trainer's clock made deterministic: every reading advances it by ``tick`` seconds (0.01 unless the
    test sets ``clock.tick``), so a time budget ends after the same steps on a busy machine and an idle one."""
    import types

    import ownlm.train.trainer as trainer

    class Clock:
        tick, now = 0.01, 1000.0

        def perf_counter(self):
            self.now += self.tick
            return self.now

    clock = Clock()
    monkeypatch.setattr(trainer, "time", types.SimpleNamespace(perf_counter=clock.perf_counter))
    return clock
