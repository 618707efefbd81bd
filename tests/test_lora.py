"""LoRA adapters and partial fine-tuning: a zero adapter changes nothing, merged == unmerged, only adapters get
gradients, adapter files round trip, parity with peft's LoRA layer, clear errors, and training still learns."""

import json
import re

import pytest
import torch
import torch.nn as nn

from ownlm.errors import UserError
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.model.lora import (
    TARGETS,
    LoRAConfig,
    LoRALinear,
    _count,
    apply_lora,
    base_state_dict,
    freeze_for_train_layers,
    load_adapter,
    lora_config,
    lora_modules,
    lora_state_dict,
    merge_lora,
    save_adapter,
    trainable_summary,
)
from ownlm.train.optim import make_optimizer

VOCAB = 61

SHAPES = {
    "gpt2": dict(pos="learned", norm="layernorm", mlp="gelu", bias=True, tie_embeddings=True),
    "modern": dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, tie_embeddings=False),
    "gqa": dict(pos="sinusoidal", norm="rmsnorm", mlp="relu2", n_kv_head=2, bias=True, tie_embeddings=True),
    "mqa": dict(pos="rope", norm="layernorm", mlp="swiglu", n_kv_head=1, bias=False, tie_embeddings=True),
}
ALL = ["all"]


def config(**kw) -> GPTConfig:
    return GPTConfig(**{"vocab_size": VOCAB, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 32, **kw})


def tiny(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    return GPT(config(**kw)).eval()


def batch(seed=1, B=2, T=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (B, T), generator=g), torch.randint(0, VOCAB, (B, T), generator=g)


def logits_of(model, x):
    with torch.no_grad():
        return model(x)[0]


def train_steps(model, steps=5, lr=1e-2, seed=1):
    """A few AdamW steps on one batch, over the trainable parameters only; the losses."""
    x, y = batch(seed)
    opt = make_optimizer(model, lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


# ---------------------------------------------------------------------------------------------- the layer


def test_lora_linear_is_the_formula():
    torch.manual_seed(0)
    base = nn.Linear(12, 20)
    layer = LoRALinear.from_linear(base, rank=3, alpha=6.0)
    assert layer.weight is base.weight and layer.bias is base.bias  # the same tensors, not copies
    assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(2, 5, 12)
    want = x @ base.weight.T + base.bias + (x @ layer.lora_A.T @ layer.lora_B.T) * (6.0 / 3)
    torch.testing.assert_close(layer(x), want)
    # state dict: the Linear's keys plus the two adapter matrices; loads into a fresh layer
    assert set(layer.state_dict()) == {"weight", "bias", "lora_A", "lora_B"}
    other = LoRALinear(12, 20, rank=3, alpha=6.0)
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other(x), layer(x))
    merged = layer.merged()
    assert type(merged) is nn.Linear and set(merged.state_dict()) == {"weight", "bias"}
    torch.testing.assert_close(merged(x), want, atol=1e-5, rtol=1e-5)


def test_lora_linear_follows_to_and_keeps_no_bias():
    layer = LoRALinear.from_linear(nn.Linear(8, 8, bias=False), rank=2)
    assert layer.bias is None and "bias" not in layer.state_dict()
    layer.to(torch.float64)
    assert {p.dtype for p in layer.parameters()} == {torch.float64}
    assert layer(torch.randn(3, 8, dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------------------------------------- apply


@pytest.mark.parametrize("shape", SHAPES)
def test_zero_adapter_leaves_logits_unchanged(shape):
    model = tiny(**SHAPES[shape])
    x, _ = batch()
    before = logits_of(model, x)
    names = apply_lora(model, LoRAConfig(rank=4, targets=ALL))
    assert len(names) == 4 * model.config.n_layer
    assert all(isinstance(model.get_submodule(n), LoRALinear) for n in names)
    assert torch.equal(logits_of(model, x), before)


@pytest.mark.parametrize("shape", ["gpt2", "modern"])
def test_zero_adapter_under_bf16_autocast(shape):
    model = tiny(**SHAPES[shape])
    x, y = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        before = logits_of(model, x)
        apply_lora(model, LoRAConfig(rank=4, targets=ALL))
        after = logits_of(model, x)
        _, loss = model(x, y)
    assert torch.equal(after, before)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and g.dtype == torch.float32 and g.isfinite().all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize(
    "targets, suffixes",
    [
        (["attn"], TARGETS["attn"]),
        (["mlp"], TARGETS["mlp"]),
        (["all"], TARGETS["attn"] + TARGETS["mlp"]),
        (["c_attn"], ("attn.c_attn",)),
        (["c_proj"], ("attn.c_proj", "mlp.c_proj")),
        ("attn.c_attn, mlp.c_fc", ("attn.c_attn", "mlp.c_fc")),  # a --lora-targets string as typed
    ],
)
def test_targets_select_layers(targets, suffixes):
    model = tiny()
    names = apply_lora(model, LoRAConfig(rank=2, targets=targets))
    want = [f"transformer.h.{i}.{s}" for i in range(2) for s in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                 "mlp.c_proj") if s in suffixes]  # fmt: skip
    assert names == want == lora_modules(model)


def test_default_config_targets_attention():
    cfg = LoRAConfig(rank=8)
    assert cfg.targets == ["attn"] and cfg.scale == 2.0
    assert LoRAConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("shape", ["gpt2", "modern"])
def test_only_adapters_receive_gradients(shape):
    model = tiny(**SHAPES[shape])
    apply_lora(model, LoRAConfig(rank=4, targets=ALL))
    x, y = batch()
    model(x, y)[1].backward()
    n_lora = 0
    for name, p in model.named_parameters():
        if name.endswith((".lora_A", ".lora_B")):
            n_lora += 1
            assert p.requires_grad and p.grad is not None, name
        else:
            assert not p.requires_grad and p.grad is None, name
    assert n_lora == 2 * 4 * model.config.n_layer
    assert model.lm_head.weight.grad is None and model.transformer.wte.weight.grad is None


@pytest.mark.parametrize("shape", SHAPES)
def test_merged_equals_unmerged_after_training(shape):
    model = tiny(**SHAPES[shape])
    plain_keys = set(model.state_dict())
    apply_lora(model, LoRAConfig(rank=4, alpha=8.0, targets=ALL))
    train_steps(model, steps=3)
    assert all(torch.count_nonzero(v) > 0 for k, v in lora_state_dict(model).items() if k.endswith("lora_B"))
    x, _ = batch(seed=7)
    unmerged = logits_of(model, x)
    assert merge_lora(model) is model
    assert not lora_modules(model) and not any("lora_" in n for n, _ in model.named_parameters())
    assert set(model.state_dict()) == plain_keys
    if model.config.tie_embeddings:
        assert model.lm_head.weight is model.transformer.wte.weight
    merged = logits_of(model, x)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=0)
    assert not torch.equal(merged, logits_of(tiny(**SHAPES[shape]), x))  # the adapter did change the model


def test_base_weights_do_not_move_while_adapters_train():
    model = tiny(**SHAPES["modern"])
    apply_lora(model, LoRAConfig(rank=4, targets=ALL))
    before = {k: v.clone() for k, v in base_state_dict(model).items()}
    train_steps(model, steps=3)
    after = base_state_dict(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_lora_training_overfits_a_tiny_batch():
    model = tiny(**SHAPES["gpt2"])
    apply_lora(model, LoRAConfig(rank=8, alpha=16.0, targets=ALL))
    losses = train_steps(model, steps=40, lr=1e-2)  # a random base with a frozen head learns slowly
    assert losses[-1] < losses[0] - 0.4, losses


def test_adapted_state_dict_round_trips_and_follows_dtype():
    model = tiny(**SHAPES["gqa"])
    cfg = LoRAConfig(rank=4, targets=ALL)
    apply_lora(model, cfg)
    train_steps(model, steps=2)
    other = tiny(seed=5, **SHAPES["gqa"])
    apply_lora(other, cfg)
    other.load_state_dict(model.state_dict())
    x, _ = batch()
    assert torch.equal(logits_of(other, x), logits_of(model, x))
    model.to(torch.float64)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    torch.testing.assert_close(logits_of(model, x).float(), logits_of(other, x), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------- errors


def test_rank_too_large_names_the_layer():
    model = tiny()
    with pytest.raises(UserError, match=re.escape("--lora-rank 33 is larger than layer transformer.h.0.attn.c_attn "
                                                  "(32 x 96)")):  # fmt: skip
        apply_lora(model, LoRAConfig(rank=33, targets=["attn"]))
    assert not lora_modules(model)  # nothing was changed
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(rank=0), "--lora-rank must be"),
        (dict(rank=-2), "--lora-rank must be"),
        (dict(rank=2, alpha=0), "--lora-alpha"),
        (dict(rank=2, dropout=1.0), "--lora-dropout"),
        (dict(rank=2, targets=[]), "--lora-targets is empty"),
        (dict(rank=2, targets=""), "--lora-targets is empty"),
    ],
)
def test_bad_config_values(kw, message):
    with pytest.raises(UserError, match=re.escape(message)):
        LoRAConfig(**kw)


@pytest.mark.parametrize("target", ["qkv", "c_attnx", "lm_head", "wte"])
def test_bad_or_unmatched_target(target):
    model = tiny()
    with pytest.raises(UserError, match=re.escape(f"--lora-targets {target}:")):
        apply_lora(model, LoRAConfig(rank=2, targets=["attn", target]))
    assert not lora_modules(model)


def test_no_matching_layer_at_all():
    class NoLinears(nn.Module):
        def __init__(self):
            super().__init__()
            self.lm_head = nn.Linear(4, 4)

    with pytest.raises(UserError, match="matches no linear layer"):
        apply_lora(NoLinears(), LoRAConfig(rank=1))


def test_apply_twice_is_refused():
    model = tiny()
    apply_lora(model, LoRAConfig(rank=2))
    with pytest.raises(UserError, match="already has LoRA adapters"):
        apply_lora(model, LoRAConfig(rank=2, targets=["mlp"]))


# ---------------------------------------------------------------------------------------------- files


@pytest.mark.parametrize("shape", ["gpt2", "modern"])
def test_adapter_round_trip_onto_fresh_base(tmp_path, shape):
    base = tiny(**SHAPES[shape])
    plain_keys = set(base.state_dict())
    cfg = LoRAConfig(rank=4, alpha=8.0, targets=["attn", "mlp.c_fc"], dropout=0.1)
    names = apply_lora(base, cfg)
    train_steps(base, steps=3)
    assert set(base_state_dict(base)) == plain_keys
    assert set(lora_state_dict(base)) == {f"{n}.{ab}" for n in names for ab in ("lora_A", "lora_B")}
    assert save_adapter(tmp_path / "adapter", base, cfg) == tmp_path / "adapter"
    meta = json.loads((tmp_path / "adapter" / "adapter.json").read_text())
    assert meta == {"format": "ownlm-lora", "version": 1, "config": cfg.to_dict(), "modules": names}
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter.json", "adapter.safetensors"]

    fresh = tiny(seed=99, **SHAPES[shape])  # other random weights: everything must come from the files
    fresh.load_state_dict(base_state_dict(base))
    assert load_adapter(tmp_path / "adapter", fresh) == cfg == lora_config(fresh) == lora_config(base)
    assert lora_modules(fresh) == names
    x, _ = batch(seed=3)
    assert torch.equal(logits_of(fresh, x), logits_of(base, x))
    assert trainable_summary(fresh) == trainable_summary(base)


def _saved(tmp_path, **kw):
    model = tiny(**kw)
    cfg = LoRAConfig(rank=2)
    apply_lora(model, cfg)
    return save_adapter(tmp_path / "a", model, cfg)


def test_load_adapter_missing_folder(tmp_path):
    with pytest.raises(
        UserError, match=re.escape(f"{tmp_path / 'nope' / 'adapter.json'}: LoRA adapter config not found")
    ):
        load_adapter(tmp_path / "nope", tiny())


def test_load_adapter_damaged_weights(tmp_path):
    folder = _saved(tmp_path)
    (folder / "adapter.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not safetensors")
    model = tiny()
    with pytest.raises(
        UserError, match=re.escape(f"{folder / 'adapter.safetensors'}: cannot read adapter weights")
    ):
        load_adapter(folder, model)
    assert not lora_modules(model)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format="ownlm-model"), "not an ownlm LoRA adapter"),
        (lambda m: m.update(version=99), "version 99 is newer"),
        (lambda m: m.update(modules=[]), "'modules' must be a non-empty list"),
        (lambda m: m["config"].update(rank=0), "bad LoRA config: --lora-rank must be"),
        (lambda m: m["config"].update(colour="red"), "unknown LoRA config keys ['colour']"),
        (lambda m: m["config"].update(rank=3), "has shape (2, 32), but rank 3 in adapter.json"),
        (lambda m: m.update(modules=m["modules"][:-1]), "tensors do not match"),
        (lambda m: m.update(modules=["transformer.h.0.attn.c_q"]), "not linear layers of this model"),
    ],
)
def test_load_adapter_bad_config(tmp_path, edit, message):
    folder = _saved(tmp_path)
    meta = json.loads((folder / "adapter.json").read_text())
    edit(meta)
    (folder / "adapter.json").write_text(json.dumps(meta))
    model = tiny()
    with pytest.raises(UserError, match=re.escape(message)) as e:
        load_adapter(folder, model)
    assert str(folder) in str(e.value)
    assert not lora_modules(model)


def test_load_adapter_onto_another_shape(tmp_path):
    folder = _saved(tmp_path)
    model = tiny(n_embd=64)
    with pytest.raises(UserError, match="another base model"):
        load_adapter(folder, model)
    assert not lora_modules(model)


# ---------------------------------------------------------------------------------------------- peft parity


@pytest.mark.parametrize("shape", ["gpt2", "modern"])
def test_parity_with_peft(shape):
    """Same A and B (random, B non-zero) in peft's LoRA and ours: same logits, same merged weights."""
    peft = pytest.importorskip("peft")
    theirs = tiny(**SHAPES[shape])
    ours = tiny(**SHAPES[shape])
    r, alpha = 4, 12.0
    peft.inject_adapter_in_model(
        peft.LoraConfig(
            r=r, lora_alpha=alpha, target_modules=["c_attn", "c_proj", "c_fc"], init_lora_weights=False
        ),
        theirs,
    )
    names = apply_lora(ours, LoRAConfig(rank=r, alpha=alpha, targets=ALL))
    state = theirs.state_dict()
    with torch.no_grad():
        for n in names:
            layer = ours.get_submodule(n)
            layer.lora_A.copy_(state[f"{n}.lora_A.default.weight"])
            layer.lora_B.copy_(state[f"{n}.lora_B.default.weight"])
            assert torch.count_nonzero(layer.lora_B) > 0
    x, _ = batch()
    torch.testing.assert_close(logits_of(ours, x), logits_of(theirs, x), atol=1e-6, rtol=1e-6)
    merge_lora(ours)
    for n in names:
        theirs.get_submodule(n).merge()
        torch.testing.assert_close(
            ours.get_submodule(n).weight, theirs.get_submodule(n).base_layer.weight, atol=1e-6, rtol=1e-6
        )


# ---------------------------------------------------------------------------------------------- summary


def test_trainable_summary():
    assert [_count(n) for n in (999, 4_096, 290_000, 10_400_000, 124_439_808, 1_558_000_000)] == [
        "999", "4.1K", "0.29M", "10.4M", "124M", "1.56B",
    ]  # fmt: skip
    model = tiny()
    total = sum(p.numel() for p in model.parameters())
    assert trainable_summary(model) == f"trainable {_count(total)} of {_count(total)} parameters (100.0%)"
    apply_lora(model, LoRAConfig(rank=2, targets=["c_attn"]))
    n = 2 * 2 * (32 + 96)  # two layers, A (2, 32) + B (96, 2)
    m = re.fullmatch(r"trainable (\S+) of (\S+) parameters \((\S+)%\)", trainable_summary(model))
    assert m and m[1] == _count(n) and m[2] == _count(total + n)
    assert float(m[3]) == pytest.approx(100 * n / (total + n), rel=0.05)


# ---------------------------------------------------------------------------------------------- partial


def _trainable(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _expected(model, last: int, tied: bool):
    names = {n for n, _ in model.named_parameters()}
    keep = {n for n in names if n.startswith("transformer.ln_f.")}
    keep |= {n for n in names for i in range(model.config.n_layer - last, model.config.n_layer)
             if n.startswith(f"transformer.h.{i}.")}  # fmt: skip
    keep.add("transformer.wte.weight" if tied else "lm_head.weight")
    return keep


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("n", [0, 1, "1", 2, "all", 5])
def test_freeze_for_train_layers(n, tied):
    model = tiny(n_layer=3, pos="learned", tie_embeddings=tied)
    everything = {name for name, _ in model.named_parameters()}
    freeze_for_train_layers(model, 0)  # start from a frozen model: "all" must unfreeze
    freeze_for_train_layers(model, n)
    k = 3 if n in ("all", 5) else int(n)
    want = everything if k >= 3 else _expected(model, k, tied)
    assert _trainable(model) == want
    assert (model.lm_head.weight.requires_grad, model.transformer.ln_f.weight.requires_grad) == (True, True)
    assert model.transformer.wte.weight.requires_grad == (tied or k >= 3)
    assert model.transformer.wpe.weight.requires_grad == (k >= 3)
    x, y = batch()
    model(x, y)[1].backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in want), name


@pytest.mark.parametrize("n", [-1, "-1", "two", 1.5, True])
def test_freeze_for_train_layers_rejects(n):
    with pytest.raises(UserError, match="--train-layers must be 'all' or a whole number >= 0"):
        freeze_for_train_layers(tiny(), n)


def test_partial_fine_tuning_trains_only_the_top():
    model = tiny(n_layer=3, **{**SHAPES["modern"]})
    freeze_for_train_layers(model, 1)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    losses = train_steps(model, steps=30, lr=3e-3)
    assert losses[-1] < losses[0] - 1.0, losses
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)


# ---------------------------------------------------------------------------------------------- device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_lora_on_cuda_bf16(tmp_path):
    model = tiny(**SHAPES["modern"]).cuda()
    cfg = LoRAConfig(rank=4, targets=ALL)
    apply_lora(model, cfg)
    assert {p.device.type for p in model.parameters()} == {"cuda"}
    x, y = (t.cuda() for t in batch())
    opt = make_optimizer(model, lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, y)[1]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    save_adapter(tmp_path, model, cfg)
    unmerged = logits_of(model, x)
    fresh = tiny(seed=3, **SHAPES["modern"])
    fresh.load_state_dict(base_state_dict(model))
    load_adapter(tmp_path, fresh.cuda())
    assert torch.equal(logits_of(fresh, x), unmerged)
    merge_lora(model)
    torch.testing.assert_close(logits_of(model, x), unmerged, atol=1e-4, rtol=0)
