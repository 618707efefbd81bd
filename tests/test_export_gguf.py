"""``ownlm export --to gguf``: read back with ``gguf.GGUFReader``, every tensor is the model's (names, shapes,
values, q/k rows in llama.cpp's pair order), a numpy forward pass written from llama.cpp's semantics (adjacent-
pair RoPE for "llama") reproduces ownlm's logits, and the embedded tokenizer (tokens, types, merges, ids)
encodes like ownlm's. With llama-cpp-python installed, llama.cpp itself runs every file: logits, tokens, greedy text."""

import json
import math

import numpy as np
import pytest
import torch
from model_samples import make_run as random_run

from ownlm.cli import main as cli
from ownlm.generate import generate
from ownlm.tokenizer import Tokenizer
from ownlm.tokenizer.export import bytes_to_unicode

gguf = pytest.importorskip("gguf")

TEXT = (
    "The quick brown fox jumps over the lazy dog. It's 2024 and we'll export 12345 models!\n"
    "def hello(name):\n    return f'Hello, {name}'\n\n  Ünïcödé café naïve — «quotes» 日本語 🙂\n"
)
GPT2 = dict(pos="learned", norm="layernorm", mlp="gelu")
MODERN = dict(pos="rope", norm="rmsnorm", mlp="swiglu")
CONFIGS = {
    "gpt2": dict(GPT2),
    "gpt2-untied-nobias": dict(GPT2, tie_embeddings=False, bias=False),
    "llama": dict(MODERN, bias=False),
    "llama-gqa-bias-untied": dict(MODERN, n_kv_head=2, bias=True, tie_embeddings=False, rope_theta=500.0),
}


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([TEXT * 3], vocab_size=300, progress=False)


def make_run(folder, tok, seed=0, **kw):
    return random_run(folder, tok, seed, n_embd=64, **kw)


def export(run, out, *extra):
    return cli(["export", str(run), "--to", "gguf", "--out", str(out), *extra])


def read(path):
    """``(metadata, tensors)``: field name -> value, tensor name -> (ggml type name, float64 numpy array)."""
    r = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in r.fields.items()}
    tensors = {}
    for t in r.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type) if t.tensor_type.name == "Q8_0" else t.data
        tensors[t.name] = (t.tensor_type.name, np.asarray(data, dtype=np.float64))
    return meta, tensors


def pair_order(hs: int) -> list[int]:
    """Rows of one head in llama.cpp's order: [0, hs/2, 1, hs/2 + 1, ...]."""
    return [j for i in range(hs // 2) for j in (i, i + hs // 2)]


def expected_tensors(model) -> dict:
    """What the file must hold, mapped here independently of ``ownlm.export.gguf``."""
    cfg = model.config
    s = {k: v.detach().double().numpy() for k, v in model.state_dict().items()}
    hs, nh, nkv, H, C = cfg.head_size, cfg.n_head, cfg.kv_heads, cfg.hidden_size, cfg.n_embd
    out = {
        "token_embd.weight": s["transformer.wte.weight"],
        "output_norm.weight": s["transformer.ln_f.weight"],
    }
    if not cfg.tie_embeddings:
        out["output.weight"] = s["lm_head.weight"]
    gpt2 = cfg.pos == "learned"
    if gpt2:
        out["position_embd.weight"] = s["transformer.wpe.weight"]
        out["output_norm.bias"] = s.get("transformer.ln_f.bias", np.zeros(C))
    for i in range(cfg.n_layer):
        p, b = f"transformer.h.{i}.", f"blk.{i}."

        pairs = [("attn_norm", "ln_1", C), ("ffn_norm", "ln_2", C), ("attn_output", "attn.c_proj", C),
                 ("ffn_down", "mlp.c_proj", C)]  # fmt: skip
        if gpt2:
            pairs += [("attn_qkv", "attn.c_attn", 3 * C), ("ffn_up", "mlp.c_fc", H)]
        for theirs, ours, rows in pairs:
            out[b + theirs + ".weight"] = s[p + ours + ".weight"]
            if p + ours + ".bias" in s:
                out[b + theirs + ".bias"] = s[p + ours + ".bias"]
            elif gpt2:  # llama.cpp's GPT-2 needs every bias
                out[b + theirs + ".bias"] = np.zeros(rows)
        if gpt2:
            continue
        q_rows = [h * hs + j for h in range(nh) for j in pair_order(hs)]
        k_rows = [nh * hs + h * hs + j for h in range(nkv) for j in pair_order(hs)]
        v_rows = list(range((nh + nkv) * hs, (nh + 2 * nkv) * hs))
        for suffix in ("weight", "bias") if cfg.bias else ("weight",):
            qkv, fc = s[p + f"attn.c_attn.{suffix}"], s[p + f"mlp.c_fc.{suffix}"]
            out |= {b + f"attn_q.{suffix}": qkv[q_rows], b + f"attn_k.{suffix}": qkv[k_rows],
                    b + f"attn_v.{suffix}": qkv[v_rows], b + f"ffn_gate.{suffix}": fc[:H],
                    b + f"ffn_up.{suffix}": fc[H:]}  # fmt: skip
    return out


# ------------------------------------------------------------ a forward pass as llama.cpp computes it


def _norm(x, w, b, eps, rms):
    if rms:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def _rope_pairs(x, base):
    """llama.cpp's "normal" RoPE: rotate (x[2i], x[2i+1]) by pos * base^(-2i/hs). x: (T, heads, hs)."""
    T, _, hs = x.shape
    ang = np.arange(T)[:, None] * base ** (-np.arange(0, hs, 2) / hs)[None]  # (T, hs/2)
    cos, sin = np.cos(ang)[:, None], np.sin(ang)[:, None]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return out


def gguf_forward(meta, t, ids):
    """Logits (T, vocab) of the GGUF model for one sequence, from the file's tensors and keys alone."""
    arch = meta["general.architecture"]
    W = {k: v for k, (_, v) in t.items()}
    g = lambda k: meta[f"{arch}.{k}"]  # noqa: E731
    C, nh, L = g("embedding_length"), g("attention.head_count"), g("block_count")
    nkv, hs, T = g("attention.head_count_kv") if arch == "llama" else nh, C // nh, len(ids)
    rms, eps = (
        arch == "llama",
        g("attention.layer_norm_rms_epsilon" if arch == "llama" else "attention.layer_norm_epsilon"),
    )
    lin = lambda x, name: x @ W[name + ".weight"].T + W.get(name + ".bias", 0.0)  # noqa: E731
    x = W["token_embd.weight"][ids] + (W["position_embd.weight"][:T] if arch == "gpt2" else 0.0)
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for i in range(L):
        b = f"blk.{i}."
        h = _norm(x, W[b + "attn_norm.weight"], W.get(b + "attn_norm.bias"), eps, rms)
        if arch == "gpt2":
            q, k, v = np.split(lin(h, b + "attn_qkv"), 3, axis=-1)
        else:
            q, k, v = lin(h, b + "attn_q"), lin(h, b + "attn_k"), lin(h, b + "attn_v")
        q, k, v = q.reshape(T, nh, hs), k.reshape(T, nkv, hs), v.reshape(T, nkv, hs)
        if arch == "llama":
            q, k = _rope_pairs(q, g("rope.freq_base")), _rope_pairs(k, g("rope.freq_base"))
        k, v = (
            np.repeat(k, nh // nkv, axis=1),
            np.repeat(v, nh // nkv, axis=1),
        )  # query head j -> kv head j // group
        att = np.einsum("thd,shd->hts", q, k) / math.sqrt(hs) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        y = np.einsum("hts,shd->thd", att / att.sum(-1, keepdims=True), v).reshape(T, C)
        x = x + lin(y, b + "attn_output")
        h = _norm(x, W[b + "ffn_norm.weight"], W.get(b + "ffn_norm.bias"), eps, rms)
        if arch == "gpt2":
            u = lin(h, b + "ffn_up")
            act = 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u**3)))
        else:
            gate = lin(h, b + "ffn_gate")
            act = gate / (1 + np.exp(-gate)) * lin(h, b + "ffn_up")
        x = x + lin(act, b + "ffn_down")
    x = _norm(x, W["output_norm.weight"], W.get("output_norm.bias"), eps, rms)
    return x @ W.get("output.weight", W["token_embd.weight"]).T


# ------------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_tensor_and_logits_f32(tmp_path, tok, name):
    model = make_run(tmp_path / "run", tok, **CONFIGS[name])
    assert export(tmp_path / "run", tmp_path / "m.gguf", "--dtype", "f32") == 0
    meta, t = read(tmp_path / "m.gguf")
    want = expected_tensors(model)
    assert sorted(t) == sorted(want)
    for k, w in want.items():
        assert t[k][0] == "F32" and t[k][1].shape == w.shape, k
        assert np.array_equal(t[k][1], w.astype(np.float32)), k
    arch = "gpt2" if name.startswith("gpt2") else "llama"
    assert meta["general.architecture"] == arch
    assert meta[f"{arch}.context_length"] == 32 and meta[f"{arch}.vocab_size"] == 320
    ids = (np.arange(32) * 37 + 5) % 320  # the full context, padding ids included
    with torch.no_grad():
        ours = model(torch.tensor(ids)[None])[0][0].double().numpy()
    assert np.abs(gguf_forward(meta, t, ids) - ours).max() < 1e-4


def test_pair_rope_of_reordered_rows_is_our_rope():
    """The identity the q/k reordering rests on, for one vector: pairs-RoPE(P x) == P halves-RoPE(x)."""
    from ownlm.model.gpt import Rotary, apply_rotary

    hs, T = 16, 9
    x = torch.randn(1, 1, T, hs, dtype=torch.float64)
    rope = Rotary(T, hs, 10000.0)
    ours = apply_rotary(x, *(t.double() for t in rope(torch.arange(T))))[0, 0].numpy()  # (T, hs)
    P = pair_order(hs)
    theirs = _rope_pairs(x[0, 0].numpy()[:, None, P], 10000.0)[:, 0]
    assert np.allclose(theirs, ours[:, P], atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [("f16", 2e-2), ("q8_0", 0.15)])
def test_f16_and_q8_0(tmp_path, tok, dtype, tol):
    model = make_run(tmp_path / "run", tok, **CONFIGS["llama-gqa-bias-untied"])
    assert export(tmp_path / "run", tmp_path / "out") == 0 if dtype == "f16" else True  # auto is f16
    if dtype == "q8_0":
        assert export(tmp_path / "run", tmp_path / "out", "--dtype", "q8_0") == 0
    path = tmp_path / "out" / f"run-{dtype}.gguf"
    meta, t = read(path)
    want = expected_tensors(model)
    big = "F16" if dtype == "f16" else "Q8_0"
    for k, w in want.items():
        kind, got = t[k]
        assert kind == ("F32" if w.ndim == 1 else big), k
        if kind == "Q8_0":  # within half a step of its 32-value block (+ the step's own f16 rounding x 127)
            step = np.abs(w.reshape(w.shape[0], -1, 32)).max(-1, keepdims=True) / 127
            assert np.all(np.abs(got - w).reshape(step.shape[0], -1, 32) <= step * (0.5 + 127 * 2**-11)), k
        else:
            assert np.allclose(got, w, rtol=1e-3, atol=1e-4), k
    assert meta["general.file_type"] == {"f16": 1, "q8_0": 7}[dtype]
    ids = (np.arange(20) * 11) % 300
    with torch.no_grad():
        ours = model(torch.tensor(ids)[None])[0][0].double().numpy()
    diff = np.abs(gguf_forward(meta, t, ids) - ours).max()
    assert 0 < diff < tol


def bpe_with_gguf_vocab(meta, tok, text):
    """Encode ``text`` the way a byte-level BPE reads the GGUF: our split, bytes spelled, merges by rank."""
    tokens, merges = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.merges"]
    rank = {tuple(m.split(" ")): r for r, m in enumerate(merges)}
    index = {s: i for i, s in enumerate(tokens)}
    spell = bytes_to_unicode()
    ids = []
    for piece in tok._regex.findall(text):
        parts = [spell[b] for b in piece.encode("utf-8")]
        while len(parts) > 1:
            pairs = [(rank.get((a, b), math.inf), j) for j, (a, b) in enumerate(zip(parts, parts[1:]))]
            best, j = min(pairs)
            if best == math.inf:
                break
            parts[j : j + 2] = [parts[j] + parts[j + 1]]
        ids += [index[p] for p in parts]
    return ids


def test_tokenizer_metadata(tmp_path, tok):
    make_run(tmp_path / "run", tok)
    assert export(tmp_path / "run", tmp_path / "m.gguf") == 0
    meta, _ = read(tmp_path / "m.gguf")
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "llama-bpe"
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == 320 == len(set(tokens))
    unspell = {c: b for b, c in bytes_to_unicode().items()}
    for i in range(320):
        if i in tok.vocab:
            assert types[i] == 1 and bytes(unspell[c] for c in tokens[i]) == tok.vocab[i]
        elif i in tok.special_ids:
            assert types[i] == 3 and tokens[i] == tok.special_ids[i]
        else:
            assert types[i] == 5  # padding rows
    assert len(meta["tokenizer.ggml.merges"]) == len(tok.merges)
    assert meta["tokenizer.ggml.bos_token_id"] == meta["tokenizer.ggml.eos_token_id"] == tok.eot_id
    assert meta["tokenizer.ggml.add_bos_token"] is False
    for text in [TEXT, "Hello world, it's the lazy dog's 12345th café.", "  x\n\n\ty 日本語 🙂👍🏽"]:
        assert bpe_with_gguf_vocab(meta, tok, text) == tok.encode_ordinary(text)


def test_chat_template_embedded(tmp_path, tok):
    from ownlm.tokenizer import chat

    template = chat.get_template("chatml")
    tok2 = chat.add_special_tokens(tok, template.special_tokens())
    make_run(tmp_path / "run", tok2, **MODERN)
    chat.save_template(tmp_path / "run", template)
    assert export(tmp_path / "run", tmp_path / "m.gguf") == 0
    meta, _ = read(tmp_path / "m.gguf")
    assert meta["tokenizer.chat_template"] == template.to_jinja()
    assert meta["tokenizer.ggml.eot_token_id"] == tok2.special_tokens["<|im_end|>"]
    for special in template.special_tokens():  # control tokens at their ids
        i = tok2.special_tokens[special]
        assert meta["tokenizer.ggml.tokens"][i] == special and meta["tokenizer.ggml.token_type"][i] == 3


@pytest.mark.parametrize("name", ["chatml", "alpaca"])
def test_llama_cpp_chat_formatting_is_ownlms(tmp_path, tok, name):
    """llama.cpp's chat formatter, built from the file's own template, tokenizes a conversation to ownlm's ids."""
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (see README: export)"
    )
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from ownlm.tokenizer import chat

    template = chat.get_template(name)
    tok2 = chat.add_special_tokens(tok, template.special_tokens())
    make_run(tmp_path / "run", tok2, **MODERN)
    chat.save_template(tmp_path / "run", template)
    assert export(tmp_path / "run", tmp_path / "m.gguf") == 0
    llm = llama_cpp.Llama(str(tmp_path / "m.gguf"), n_ctx=64, n_threads=1, verbose=False)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The quick fox?"},
                {"role": "assistant", "content": "It jumps."}, {"role": "user", "content": "And the dog?"}]  # fmt: skip
    formatter = Jinja2ChatFormatter(llm.metadata["tokenizer.chat_template"], eos_token="", bos_token="")
    text = formatter(messages=messages).prompt
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == template.encode_prompt(tok2, messages)


def test_gpt2_pattern_maps_to_gpt2_pre(tmp_path):
    tok2 = Tokenizer.train([TEXT * 3], vocab_size=280, pattern="gpt2", progress=False)
    make_run(tmp_path / "run", tok2)
    assert export(tmp_path / "run", tmp_path / "m.gguf") == 0
    meta, _ = read(tmp_path / "m.gguf")
    assert meta["tokenizer.ggml.pre"] == "gpt-2" and len(meta["tokenizer.ggml.tokens"]) == 320


def test_bad_input(tmp_path, tok, capsys):
    make_run(tmp_path / "run", tok, pos="sinusoidal")
    assert export(tmp_path / "run", tmp_path / "m.gguf") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pos='sinusoidal'" in err and not (tmp_path / "m.gguf").exists()
    make_run(tmp_path / "run", tok)
    assert export(tmp_path / "run", tmp_path / "m.gguf", "--dtype", "bf16") == 2
    assert "--dtype bf16" in capsys.readouterr().err
    assert export(tmp_path / "run", tmp_path / "m.gguf") == 0
    assert export(tmp_path / "run", tmp_path / "m.gguf") == 2  # exists
    assert "--force" in capsys.readouterr().err
    assert export(tmp_path / "run", tmp_path / "m.gguf", "--force", "--dtype", "f32") == 0
    assert read(tmp_path / "m.gguf")[0]["general.file_type"] == 0
    (tmp_path / "notes.gguf").write_text("not a gguf")
    assert export(tmp_path / "run", tmp_path / "notes.gguf", "--force") == 2
    assert (tmp_path / "notes.gguf").read_text() == "not a gguf"
    # a folder target: an earlier export is replaced, the old file of another dtype removed
    assert export(tmp_path / "run", tmp_path / "out") == 0
    assert export(tmp_path / "run", tmp_path / "out", "--dtype", "q8_0") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".ownlm-output.json", "run-q8_0.gguf"]
    assert json.loads((tmp_path / "out" / ".ownlm-output.json").read_text())["files"] == ["run-q8_0.gguf"]


LLAMA_CPP_TOL = {"f32": 5e-4, "f16": 2e-3, "q8_0": 3e-2}  # measured: 1.4e-4, 3.1e-4, 8.2e-3 on logits of ~1


@pytest.mark.parametrize("dtype", list(LLAMA_CPP_TOL))
@pytest.mark.parametrize("name", list(CONFIGS))
def test_llama_cpp_runs_the_file_like_ownlm(tmp_path, tok, name, dtype):
    """llama.cpp itself (through llama-cpp-python, when installed) loads the export: its logits at every prompt
    position equal ownlm's, it tokenizes like ownlm, and its greedy continuation is ownlm's."""
    llama_cpp = pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed (see README: export)"
    )
    model = make_run(tmp_path / "run", tok, **CONFIGS[name])
    assert export(tmp_path / "run", tmp_path / "m.gguf", "--dtype", dtype) == 0
    llm = llama_cpp.Llama(str(tmp_path / "m.gguf"), n_ctx=64, n_threads=1, verbose=False, logits_all=True)
    prompt = tok.encode("The quick brown fox jumps over")
    assert llm.tokenize(b"The quick brown fox jumps over", add_bos=False, special=False) == prompt
    with torch.no_grad():
        want = model(torch.tensor([prompt]))[0][0].double().numpy()  # (T, V)
    llm.reset()
    llm.eval(prompt)
    got = np.asarray(llm.scores[: len(prompt)], dtype=np.float64)
    np.testing.assert_allclose(got, want, atol=LLAMA_CPP_TOL[dtype], rtol=0)
    if dtype == "f32":
        greedy = generate(model, prompt, 10, temperature=0)[0]
        ours = []
        for t in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            ours.append(t)
            if len(ours) == len(greedy):
                break
        assert ours == greedy


def test_the_readmes_export_pair_works_as_written(tmp_path, tok, monkeypatch, capsys):
    """README: `--to hf --out export/mymodel-hf`, then `--to gguf --out export/` gives export/mymodel-f16.gguf
    beside the first export (the folder holds it, so the second writes one file there, not a folder export)."""
    make_run(tmp_path / "runs" / "mymodel", tok)
    monkeypatch.chdir(tmp_path)
    assert cli(["export", "runs/mymodel", "--to", "hf", "--out", "export/mymodel-hf"]) == 0
    assert cli(["export", "runs/mymodel", "--to", "gguf", "--out", "export/"]) == 0
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["mymodel-f16.gguf", "mymodel-hf"]
    assert read(tmp_path / "export" / "mymodel-f16.gguf")[0]["general.file_type"] == 1  # f16
    assert (
        cli(["export", "runs/mymodel", "--to", "gguf", "--out", "export/"]) == 2
    )  # replaced only with --force
    assert "--force" in capsys.readouterr().err
    assert cli(["export", "runs/mymodel", "--to", "gguf", "--out", "export/", "--force"]) == 0
