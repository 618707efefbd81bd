"""The model layer's run folder and checkpoint kinds: pointers written and read in one place, pruning that keeps
the best step, ``state.json`` read and written whole (and in the layout earlier versions wrote), a registered
kind loading through its hook, and LoRA found in the module tree rather than by parameter names."""

import json

import pytest
import torch
import torch.nn as nn

from ownlm.errors import UserError
from ownlm.model.checkpoint import load_model, read_checkpoint_config, resolve_checkpoint, save_model
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.model.kinds import Kind, get, kind_of, register
from ownlm.model.lora import LoRAConfig, apply_lora, has_lora, lora_config
from ownlm.model.run import RunFolder, RunState, read_state

# state.json as the Trainer wrote it before RunState existed (every key, in its order)
OLD_STATE = {
    "format": "ownlm-train-state", "version": 1, "step": 20, "tokens_seen": 1280, "data_position": 40,
    "best_val_loss": 3.25, "best_saved_val_loss": 3.25, "elapsed_s": 12.5, "setup_s": 0.75, "dtype": "fp32",
    "warmup_steps": 2, "warmup_progress": 0.1, "next_eval": 3,
    "window": {"loss": 0.0, "steps": 0, "tokens": 0, "time": 0.0, "lr": 0.001}, "world_size": 1,
    "run_config": {"train": {"max_iters": 40}}, "rng": {"torch": "AAAA"},
}  # fmt: skip


def tiny() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=16))


def write_steps(run: RunFolder, steps, best=()):
    for s in steps:
        run.write_step(s, lambda d, s=s: (d / "model.safetensors").write_text(str(s)), best=s in best, keep=2)


def test_state_json_reads_and_writes_in_the_old_layout(tmp_path):
    state = RunState.from_dict(OLD_STATE)
    assert (
        state.step == 20
        and state.best_saved_val_loss == 3.25
        and state.run_config["train"]["max_iters"] == 40
    )
    written = state.to_dict()  # the old keys, in their order, and the fields added since at their defaults
    assert {k: v for k, v in written.items() if k in OLD_STATE} == OLD_STATE
    assert [k for k in written if k in OLD_STATE] == list(OLD_STATE)
    assert {k: v for k, v in written.items() if k not in OLD_STATE} == {
        "evals_since_best": 0,
        "rng_ranks": None,
    }
    newer = {**OLD_STATE, "from_a_newer_ownlm": [1, 2]}  # unknown keys are kept, not dropped
    assert RunState.from_dict(newer).to_dict() == {**written, "from_a_newer_ownlm": [1, 2]}
    folder = tmp_path / "step_000020"
    folder.mkdir()
    (folder / "state.json").write_text(json.dumps(OLD_STATE))
    assert read_state(folder) == state
    with pytest.raises(UserError, match="newer than this ownlm"):
        RunState.from_dict({**OLD_STATE, "version": 2})
    with pytest.raises(UserError, match="not an ownlm training state"):
        RunState.from_dict({"step": 3})


def test_pointers_pruning_and_restore_best(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.latest() is None and not run.has_checkpoint()
    with pytest.raises(UserError, match="neither a checkpoint"):
        run.checkpoint()
    write_steps(run, [1, 2, 3, 4], best={2})
    names = sorted(p.name for p in run.path.glob("step_*"))
    assert names == ["step_000002", "step_000003", "step_000004"]  # newest 2 + the best, kept
    assert run.pointer("latest") == "step_000004" and run.best() == run.path / "step_000002"
    assert run.checkpoint() == run.newest() == run.path / "step_000004"
    run.point_latest_at(run.path / "step_000002")  # --restore-best: commands load the best ...
    assert run.checkpoint() == run.path / "step_000002" and run.pointer("last") == "step_000004"
    assert run.newest() == run.path / "step_000004"  # ... and training continues from the newest
    write_steps(run, [5])
    assert run.pointer("latest") == "step_000005" and run.pointer("last") is None
    (run.path / "latest").write_text("step_000009\n")
    with pytest.raises(UserError, match="names 'step_000009'"):
        run.checkpoint()


def test_a_failed_step_leaves_the_previous_one_and_its_pointer(tmp_path):
    run = RunFolder(tmp_path)
    write_steps(run, [1])

    def broken(folder):
        (folder / "model.safetensors").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        run.write_step(2, broken)
    assert run.pointer("latest") == "step_000001" and not list(tmp_path.glob(".step_*"))


def test_claim_refuses_a_second_run_and_a_missing_resume(tmp_path):
    with (
        pytest.raises(UserError, match="no checkpoint to resume"),
        RunFolder(tmp_path / "new").claim(resume=True),
    ):
        pass
    write_steps(RunFolder(tmp_path / "r"), [1])
    with pytest.raises(UserError, match="already holds a run"), RunFolder(tmp_path / "r").claim(resume=False):
        pass


class Wrapped(nn.Module):
    """A kind a task package could add: the GPT plus a scalar head."""

    def __init__(self, gpt, scale=1.0):
        super().__init__()
        self.trunk, self.scale, self.head = gpt, scale, nn.Linear(gpt.config.n_embd, 1)

    @property
    def config(self):
        return self.trunk.config


def test_a_registered_kind_saves_and_loads_through_its_hooks(tmp_path):
    kind = register(Kind("test-wrapped", module=Wrapped, trunk="trunk",
                         build=lambda gpt, meta, folder: Wrapped(gpt, meta["test-wrapped"]["scale"]),
                         describe=lambda m: {"scale": m.scale}))  # fmt: skip
    model = Wrapped(tiny(), scale=2.5)
    assert kind_of(model) is kind and kind_of(tiny()) is get("lm")
    save_model(tmp_path / "m", model)
    meta = read_checkpoint_config(tmp_path / "m")
    assert meta["kind"] == "test-wrapped" and meta["test-wrapped"] == {"scale": 2.5}
    loaded, _, _ = load_model(tmp_path / "m", kinds=("test-wrapped",))
    assert isinstance(loaded, Wrapped) and loaded.scale == 2.5
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert loaded.trunk.lm_head.weight is loaded.trunk.transformer.wte.weight  # still tied
    meta["kind"] = "from-the-future"
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="kind 'from-the-future'"):
        load_model(tmp_path / "m", kinds=("from-the-future",))


def test_lora_is_found_in_the_module_tree_not_by_parameter_names(tmp_path):
    model = tiny()
    model.register_parameter("lora_lookalike", nn.Parameter(torch.zeros(1)))  # a name is not an adapter
    assert not has_lora(model) and lora_config(model) is None
    cfg = LoRAConfig(rank=2, targets=["attn"])
    model = tiny()
    apply_lora(model, cfg)
    assert has_lora(model) and lora_config(model) is cfg and not hasattr(model, "lora_config")
    save_model(tmp_path / "m", model)
    assert read_checkpoint_config(tmp_path / "m")["kind"] == "lm+lora"
    kept, _, _ = load_model(tmp_path / "m", merge_lora=False)
    assert lora_config(kept) == cfg
    assert not has_lora(load_model(tmp_path / "m")[0])  # merged


def test_a_build_folder_resolves_to_its_newest_run(tmp_path):
    (tmp_path / "pipeline.json").write_text("{}")
    save_model(tmp_path / "run" / "step_000003", tiny())
    (tmp_path / "run" / "latest").write_text("step_000003\n")
    assert resolve_checkpoint(tmp_path) == tmp_path / "run" / "step_000003"
