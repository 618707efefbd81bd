"""The GPT model, its KV cache and model folders: causality, cache == full forward for every option,
save/load round trips, GPT-2's known parameter counts, and clear errors for bad checkpoints."""

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from ownlm.errors import UserError
from ownlm.model.checkpoint import load_model, read_checkpoint_config, resolve_checkpoint, save_model
from ownlm.model.gpt import GPT, PRESETS, GPTConfig, config_from_depth, config_from_preset
from ownlm.runtime.kv_cache import KVCache

VOCAB = 61  # odd on purpose: nothing may assume a round vocabulary

OPTIONS = [
    dict(pos=pos, norm=norm, mlp=mlp, n_kv_head=kv, bias=(i % 2 == 0), tie_embeddings=(i % 3 != 0))
    for i, (pos, norm, mlp, kv) in enumerate(
        itertools.product(
            ["learned", "rope", "sinusoidal"],
            ["layernorm", "rmsnorm"],
            ["gelu", "swiglu", "relu2"],
            [None, 2, 1],
        )  # fmt: skip
    )
]


def tiny(seed=0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(**{"vocab_size": VOCAB, "block_size": 32, "n_layer": 2, "n_head": 4, "n_embd": 32, **kw})
    return GPT(cfg).eval()


def _id(o):
    return "-".join(str(v) for v in o.values())


@pytest.mark.parametrize("opts", OPTIONS, ids=_id)
def test_kv_cache_steps_equal_full_forward(opts):
    model = tiny(**opts)
    x = torch.randint(0, VOCAB, (2, 24))
    full, _ = model(x)
    cache = KVCache.for_model(model, batch_size=2)
    parts = [
        model(x[:, :5], kv_cache=cache)[0],
        model(x[:, 5:11], kv_cache=cache)[0],
    ]  # prefill in two chunks
    parts += [model(x[:, t : t + 1], kv_cache=cache)[0] for t in range(11, 24)]  # then one token at a time
    assert cache.pos == 24
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(x, last_only=True)[0], full[:, -1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("opts", OPTIONS, ids=_id)
def test_rows_at_different_positions_equal_each_row_alone(opts):
    """One forward pass over cache rows of different lengths (the serving engine's step) gives each row the
    logits of that row alone with a fresh cache; several new tokens per row too."""
    model = tiny(**opts)
    seqs = [torch.randint(0, VOCAB, (n,)) for n in (9, 3, 14)]
    cache = KVCache.for_model(model, batch_size=4)  # one slot more than used: it must not matter
    for slot, s in enumerate(seqs):  # prefill each row but its last 3 tokens, alone, into its own slot
        model(s[None, :-3], kv_cache=cache.rows(slot, 1))
    assert cache.lengths[:3].tolist() == [6, 0, 11]
    step = torch.stack([s[-3:-1] for s in seqs])  # (3, 2): two tokens per row, each row at its own place
    got = [model(step, kv_cache=cache.rows(0, 3))[0]]
    got.append(model(torch.stack([s[-1:] for s in seqs]), kv_cache=cache.rows(0, 3))[0])  # then one
    got = torch.cat(got, dim=1)  # (3, 3, V)
    for b, s in enumerate(seqs):
        alone = KVCache.for_model(model)
        model(s[None, :-3], kv_cache=alone)
        want = torch.cat(
            [model(s[None, -3:-1], kv_cache=alone)[0], model(s[None, -1:], kv_cache=alone)[0]], 1
        )
        torch.testing.assert_close(got[b], want[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[b], model(s[None])[0][0, -3:], atol=1e-5, rtol=1e-5)


def test_cache_copy_moves_a_row_to_another_slot():
    model = tiny(pos="rope", n_kv_head=2)
    s = torch.randint(0, VOCAB, (1, 10))
    cache = KVCache.for_model(model, batch_size=3)
    model(s[:, :9], kv_cache=cache.rows(0, 1))
    cache.copy(0, 2)
    assert cache.lengths.tolist() == [9, 0, 9]
    torch.testing.assert_close(model(s[:, 9:], kv_cache=cache.rows(2, 1))[0][0, -1], model(s)[0][0, -1],
                               atol=1e-5, rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("opts", OPTIONS[::5], ids=_id)
def test_causality_future_tokens_do_not_change_past_logits(opts):
    model = tiny(**opts)
    x = torch.randint(0, VOCAB, (1, 20))
    y = x.clone()
    y[0, 12:] = (y[0, 12:] + 1) % VOCAB
    lx, ly = model(x)[0], model(y)[0]
    torch.testing.assert_close(lx[:, :12], ly[:, :12])
    assert not torch.allclose(lx[:, 12], ly[:, 12])


def test_kv_cache_decode_does_not_reallocate():
    model = tiny(pos="rope", n_kv_head=2)
    cache = KVCache.for_model(model)
    ptr = cache.k.data_ptr(), cache.v.data_ptr()
    model(torch.randint(0, VOCAB, (1, 4)), kv_cache=cache)
    for _ in range(5):
        model(torch.randint(0, VOCAB, (1, 1)), kv_cache=cache)
    assert (cache.k.data_ptr(), cache.v.data_ptr()) == ptr
    assert cache.k.shape == (2, 1, 2, 32, 8)  # (layers, B, n_kv_head, block_size, head_size)


def test_too_long_input_is_an_error():
    model = tiny()
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))


def test_loss_is_cross_entropy_ignoring_minus_100_and_masked_positions():
    model = tiny()
    x = torch.randint(0, VOCAB, (2, 10))
    t = torch.randint(0, VOCAB, (2, 10))
    logits, loss = model(x, t)
    torch.testing.assert_close(loss, F.cross_entropy(logits.view(-1, VOCAB), t.view(-1)))
    mask = torch.zeros(2, 10, dtype=torch.long)
    mask[:, 6:] = 1
    _, masked = model(x, t, loss_mask=mask)
    torch.testing.assert_close(
        masked, F.cross_entropy(logits[:, 6:].reshape(-1, VOCAB), t[:, 6:].reshape(-1))
    )
    t2 = t.clone()
    t2[:, :6] = -100
    torch.testing.assert_close(model(x, t2)[1], masked)


def test_dropout_only_in_training():
    model = tiny(dropout=0.5)
    x = torch.randint(0, VOCAB, (1, 8))
    torch.testing.assert_close(model(x)[0], model(x)[0])
    model.train()
    assert not torch.allclose(model(x)[0], model(x)[0])


def test_tied_embeddings_share_storage_and_untied_do_not():
    tied, untied = tiny(), tiny(tie_embeddings=False)
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    assert untied.num_params(False) - tied.num_params(False) == VOCAB * 32


def test_gpt2_parameter_names():
    names = set(tiny().state_dict())
    for n in ["transformer.wte.weight", "transformer.wpe.weight", "transformer.h.1.ln_1.weight",
              "transformer.h.1.attn.c_attn.weight", "transformer.h.1.attn.c_proj.bias", "transformer.h.1.ln_2.bias",
              "transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_proj.weight", "transformer.ln_f.weight",
              "lm_head.weight"]:  # fmt: skip
        assert n in names
    assert not any(
        "rope" in n or "table" in n for n in tiny(pos="rope").state_dict()
    )  # fixed tables not saved


@pytest.mark.parametrize(
    "preset, count",
    # GPT-2's published sizes (Hugging Face's counts, tied output head)
    [
        ("gpt2", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_gpt2_presets_have_gpt2_parameter_counts(preset, count):
    with torch.device("meta"):
        model = GPT(config_from_preset(preset))
    assert model.num_params(non_embedding=False) == count
    assert model.num_params() == count - 1024 * model.config.n_embd  # minus the position embeddings
    assert model.flops_per_token(1024) > 6 * model.num_params()


def test_presets_and_size_dial():
    for name in PRESETS:
        cfg = config_from_preset(name)
        assert cfg.n_embd % cfg.n_head == 0
    d12 = config_from_depth(12)
    assert (d12.n_layer, d12.n_head, d12.n_embd) == (12, 12, 768)
    widths = [config_from_depth(d).n_embd for d in range(1, 9)]
    assert widths == sorted(widths) and config_from_depth(4, block_size=64).block_size == 64
    assert config_from_preset("tiny", n_layer=2).n_layer == 2
    with pytest.raises(UserError, match="unknown model preset"):
        config_from_preset("huge")


def test_config_validation_and_dict_round_trip():
    with pytest.raises(UserError, match="multiple of n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(UserError, match="n_kv_head"):
        GPTConfig(n_head=12, n_kv_head=5)
    with pytest.raises(UserError, match="pos"):
        GPTConfig(pos="alibi")
    cfg = GPTConfig(pos="rope", mlp="swiglu", n_kv_head=4, bias=False)
    assert GPTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.hidden_size % 64 == 0
    with pytest.raises(UserError, match="unknown model config keys"):
        GPTConfig.from_dict({**cfg.to_dict(), "n_experts": 8})


def test_init_scales_residual_projections():
    model = GPT(GPTConfig(vocab_size=VOCAB, n_layer=8, n_head=4, n_embd=256, block_size=16))
    fc = model.transformer.h[0].mlp.c_fc.weight.std().item()
    proj = model.transformer.h[0].mlp.c_proj.weight.std().item()
    assert fc == pytest.approx(0.02, rel=0.05)
    assert proj == pytest.approx(0.02 / 4, rel=0.05)  # 0.02 / sqrt(2 * 8)


def test_crop_block_size_keeps_logits_of_short_inputs():
    for pos in ["learned", "sinusoidal", "rope"]:
        model = tiny(pos=pos)
        x = torch.randint(0, VOCAB, (1, 10))
        before = model(x)[0]
        model.crop_block_size(16)
        torch.testing.assert_close(model(x)[0], before)
        with pytest.raises(ValueError):
            model(torch.zeros(1, 17, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("opts", [OPTIONS[0], OPTIONS[21], OPTIONS[-1]], ids=_id)
def test_save_load_round_trip_gives_identical_logits(tmp_path, opts):
    from ownlm.tokenizer import Tokenizer

    model = tiny(**opts)
    tok = Tokenizer(merges=[(104, 105)], special_tokens={"<|endoftext|>": 257})
    save_model(tmp_path / "m", model, tok, extra={"step": 7})

    class Wrapper(torch.nn.Module):  # what DDP / torch.compile look like: the real model under an attribute
        def __init__(self, m):
            super().__init__()
            self.module = m

    save_model(tmp_path / "w", Wrapper(model))
    x = torch.randint(0, VOCAB, (2, 16))
    for folder in ["m", "w"]:
        loaded, tok2, cfg = load_model(tmp_path / folder)
        assert cfg == model.config and not loaded.training
        torch.testing.assert_close(loaded(x)[0], model(x)[0], atol=0, rtol=0)
        assert loaded.config.tie_embeddings == (loaded.lm_head.weight is loaded.transformer.wte.weight)
    assert tok2 is None and load_model(tmp_path / "m")[1] == tok
    assert read_checkpoint_config(tmp_path / "m")["extra"] == {"step": 7}
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "vocab.txt"]  # fmt: skip


def test_tied_head_is_stored_once(tmp_path):
    from safetensors import safe_open

    save_model(tmp_path, tiny())
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys() and "transformer.wte.weight" in f.keys()


def test_load_in_bfloat16(tmp_path):
    save_model(tmp_path, tiny())
    model, _, _ = load_model(tmp_path, dtype=torch.bfloat16)
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model(torch.zeros(1, 4, dtype=torch.long))[0].dtype == torch.bfloat16


def test_resolve_checkpoint_follows_latest(tmp_path):
    run = tmp_path / "run"
    save_model(run / "step_000010", tiny())
    save_model(run / "step_000020", tiny(seed=1))
    (run / "latest").write_text("step_000020\n")
    assert resolve_checkpoint(run) == run / "step_000020"
    assert resolve_checkpoint(run / "step_000010") == run / "step_000010"
    x = torch.zeros(1, 3, dtype=torch.long)
    torch.testing.assert_close(load_model(run)[0](x)[0], tiny(seed=1)(x)[0])
    (run / "latest").write_text("step_000030")
    with pytest.raises(UserError, match="step_000030"):
        resolve_checkpoint(run)


def test_bad_checkpoints_are_clear_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="neither a checkpoint"):
        load_model(tmp_path / "empty")
    save_model(tmp_path / "future", tiny())
    meta = json.loads((tmp_path / "future" / "config.json").read_text())
    (tmp_path / "future" / "config.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(UserError, match="version 99 is newer"):
        load_model(tmp_path / "future")
    save_model(tmp_path / "broken", tiny())
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="cannot read weights"):
        load_model(tmp_path / "broken")
    save_model(tmp_path / "mismatch", tiny())
    meta = json.loads((tmp_path / "mismatch" / "config.json").read_text())
    meta["model"]["n_layer"] = 3
    (tmp_path / "mismatch" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="do not match"):
        load_model(tmp_path / "mismatch")


def test_scored_only_gives_the_same_loss_and_gradients_as_the_full_head():
    """Fine-tuning runs the output head only where a target counts: same loss, same gradients."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=96, block_size=16, n_layer=2, n_head=2, n_embd=32, tie_embeddings=False))
    x = torch.randint(0, 96, (3, 16))
    y = torch.randint(0, 96, (3, 16))
    y[:, :10] = -100  # a prompt: no loss there
    grads = []
    for scored_only in (False, True):
        model.zero_grad()
        logits, loss = model(x, y, reduction="sum", scored_only=scored_only)
        assert (logits is None) == scored_only
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "change", [{"n_embd": 64}, {"vocab_size": 512}, {"mlp": "swiglu"}, {"n_embd": 2**20, "n_head": 2**10}]
)
def test_a_config_edited_to_another_shape_is_one_clear_error(tmp_path, change):
    torch.manual_seed(0)
    save_model(tmp_path / "m", GPT(GPTConfig(vocab_size=256, block_size=16, n_layer=1, n_head=2, n_embd=32)))
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["model"].update(change)
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(UserError, match="do not belong together"):
        load_model(tmp_path / "m")
