"""Importing real model formats: Hugging Face folders (Llama, Mistral, Qwen2, GPT-2) and GGUF files.

Tiny random transformers models are built inside the tests, saved, imported with the CLI and compared logit by
logit; GGUF files are written by ownlm's export (and the ``gguf`` package's quantizers) and read back.
"""

import json

import numpy as np
import pytest
import torch

from ownlm.cli import main as cli
from ownlm.formats import tensor_map
from ownlm.model.checkpoint import load_model
from ownlm.model.gpt import GPT, GPTConfig

transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

LLAMA = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=50000.0)  # fmt: skip
CASES = {
    "llama-gqa-tied": ("LlamaConfig", "LlamaForCausalLM", dict(LLAMA, tie_word_embeddings=True)),
    "llama-untied-bias": ("LlamaConfig", "LlamaForCausalLM",
                          dict(LLAMA, tie_word_embeddings=False, attention_bias=True, mlp_bias=True)),
    "llama3-rope-scaling": ("LlamaConfig", "LlamaForCausalLM", dict(LLAMA, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16})),
    "linear-rope-scaling": ("LlamaConfig", "LlamaForCausalLM",
                            dict(LLAMA, rope_scaling={"rope_type": "linear", "factor": 4.0})),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(LLAMA, sliding_window=None, tie_word_embeddings=False)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(LLAMA, tie_word_embeddings=True)),
    "qwen2-untied": ("Qwen2Config", "Qwen2ForCausalLM", dict(LLAMA, tie_word_embeddings=False)),
}  # fmt: skip


def hf_model(case: str, seed: int = 0):
    config_cls, model_cls, kwargs = CASES[case]
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kwargs)).eval()
    with torch.no_grad():  # random biases (transformers initialises them to zero, which would hide a mix-up)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_hf_import_logits_equal_transformers(tmp_path, case):
    hf = hf_model(case)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    assert cli(["import", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "out")]) == 0
    model, _, cfg = load_model(tmp_path / "out")
    x = torch.randint(0, 300, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], hf(x).logits, atol=1e-4, rtol=1e-4)
    assert cfg.tie_embeddings == hf.config.tie_word_embeddings


def test_hf_import_reads_shards_with_their_index(tmp_path):
    hf = hf_model("llama-untied-bias", seed=3)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True, max_shard_size="100KB")
    shards = sorted(p.name for p in (tmp_path / "hf").glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert cli(["import", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "out")]) == 0
    model, _, _ = load_model(tmp_path / "out")
    x = torch.randint(0, 300, (1, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], hf(x).logits, atol=1e-4, rtol=1e-4)


def test_hf_import_refuses_what_it_cannot_reproduce(tmp_path, capsys):
    hf = hf_model("llama-gqa-tied")
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    for change, words in [({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling type 'yarn'"),
                          ({"model_type": "gemma"}, "model_type 'gemma'"),
                          ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
                          ({"head_dim": 32}, "head_dim 32")]:  # fmt: skip
        (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, **change}))
        assert cli(["import", "hf", str(tmp_path / "hf"), "--out", str(tmp_path / "out")]) == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------- tensor map

OPTION_MIXES = {
    "gpt2": dict(),
    "gpt2-nobias-untied": dict(bias=False, tie_embeddings=False),
    "llama": dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, n_kv_head=2),
    "llama-bias-untied": dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=True, tie_embeddings=False),
    "qwen2": dict(pos="rope", norm="rmsnorm", mlp="swiglu", bias=False, qkv_bias=True, n_kv_head=1),
}


@pytest.mark.parametrize("fmt", ["hf", "gguf"])
@pytest.mark.parametrize("mix", list(OPTION_MIXES))
def test_tensor_map_round_trip_is_the_identity(mix, fmt):
    cfg = GPTConfig(vocab_size=70, block_size=16, n_layer=2, n_head=4, n_embd=32, **OPTION_MIXES[mix])
    torch.manual_seed(0)
    model = GPT(cfg)
    state = {
        k: v for k, v in model.state_dict().items() if not (cfg.tie_embeddings and k == "lm_head.weight")
    }
    arch = tensor_map.arch_of(cfg)
    outside = tensor_map.to_outside(state, cfg, arch, fmt)
    if arch == "gpt2":
        outside = tensor_map.zero_biases(outside, cfg, fmt, torch.zeros)
    back = dict(tensor_map.from_outside(outside.__getitem__, set(outside), cfg, arch, fmt))
    for k, v in state.items():
        torch.testing.assert_close(back[k], v, atol=0, rtol=0)
    assert set(back) - set(state) <= {
        k for k in back if k.endswith(".bias")
    }  # only GPT-2's zero biases extra


def test_rope_rows_interleave_and_back():
    w = torch.arange(2 * 8 * 3).reshape(16, 3)
    inter = tensor_map.interleave_rope_rows(w, 2)
    assert inter[:, 0].tolist()[:8] == [0, 12, 3, 15, 6, 18, 9, 21]  # head 0: rows 0,4,1,5,2,6,3,7 (x3 cols)
    assert torch.equal(tensor_map.halve_rope_rows(inter, 2), w)


# ------------------------------------------------------------------------------------------------- GGUF


def small_model(mix: str, seed: int = 0) -> GPT:
    cfg = GPTConfig(vocab_size=320, block_size=64, n_layer=2, n_head=4, n_embd=64, **OPTION_MIXES[mix])
    torch.manual_seed(seed)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def write_gguf_file(model, path, qtype):
    """A GGUF holding ``model``'s tensors (matrices in ``qtype``, vectors f32) with the metadata import needs."""
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    from ownlm.export.gguf import add_model_keys, gguf_tensors

    cfg = model.config
    arch = tensor_map.arch_of(cfg, "GGUF")
    w = gguf.GGUFWriter(str(path), arch)
    add_model_keys(w, cfg, arch)  # the export's metadata; the tensors are stored in `qtype` here
    for name, x in gguf_tensors(model).items():
        t = getattr(Q, qtype)
        if x.ndim == 1 or t == Q.F32:
            w.add_tensor(name, x.astype(np.float32))
        else:
            w.add_tensor(name, quantize(x, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


TOLERANCE = {
    "F32": 1e-5,
    "F16": 0.02,
    "BF16": 0.1,
    "Q8_0": 0.1,
    "Q5_1": 0.5,
    "Q5_0": 0.5,
    "Q4_1": 1.0,
    "Q4_0": 1.0,
}


@pytest.mark.parametrize("qtype", list(TOLERANCE))
@pytest.mark.parametrize("mix", ["llama", "llama-bias-untied", "qwen2", "gpt2"])
def test_gguf_import_gives_back_the_model(tmp_path, mix, qtype):
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize, quantize

    from ownlm.importers.gguf import load_gguf

    model = small_model(mix)
    path = write_gguf_file(model, tmp_path / "m.gguf", qtype)
    back, _, _, info = load_gguf(path)
    assert info["architecture"] == tensor_map.arch_of(model.config, "GGUF")
    assert back.config.tie_embeddings == model.config.tie_embeddings
    # each matrix is exactly the gguf package's dequantization of what was stored ...
    t = getattr(Q, qtype)
    want = model.transformer.h[1].mlp.c_proj.weight.detach().numpy()
    stored = want if t == Q.F32 else dequantize(quantize(want, t), t).reshape(want.shape)
    np.testing.assert_array_equal(back.transformer.h[1].mlp.c_proj.weight.detach().numpy(), stored)
    # ... and the whole model computes the same logits within the format's error
    x = torch.randint(0, 320, (1, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        err = (back(x)[0] - model(x)[0]).abs().max().item()
    assert err <= TOLERANCE[qtype], err


def test_gguf_import_refuses_unknown_architectures_and_damage(tmp_path, capsys):
    model = small_model("llama")
    path = write_gguf_file(model, tmp_path / "m.gguf", "F32")
    data = path.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    assert cli(["import", "gguf", str(tmp_path / "cut.gguf"), "--out", str(tmp_path / "o1")]) == 2
    assert "cut.gguf" in capsys.readouterr().err
    (tmp_path / "text.gguf").write_text("hello")
    assert cli(["import", "gguf", str(tmp_path / "text.gguf"), "--out", str(tmp_path / "o2")]) == 2
    assert "not a GGUF file" in capsys.readouterr().err
    w = gguf.GGUFWriter(str(tmp_path / "bert.gguf"), "bert")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert cli(["import", "gguf", str(tmp_path / "bert.gguf"), "--out", str(tmp_path / "o3")]) == 2
    assert "architecture 'bert' is not supported" in capsys.readouterr().err
    assert not any((tmp_path / o).exists() for o in ("o1", "o2", "o3"))
