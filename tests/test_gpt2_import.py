"""GPT-2 weights import: logits equal to ``transformers.GPT2LMHeadModel`` for tiny random GPT-2s saved in every
Hugging Face layout, through the ``ownlm import gpt2`` CLI; export back; the real folders in shared data;
the Hub download path (without network); clear errors for bad folders."""

import json

import pytest
import torch

from ownlm.cli import main as cli
from ownlm.export.hf import hf_state_dict
from ownlm.model.checkpoint import load_model

transformers = pytest.importorskip("transformers")

MERGES = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]  # a small real byte-level BPE: 256 bytes + 3 merges + eot


def write_tokenizer(folder):
    from ownlm.tokenizer.export import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES), encoding="utf-8"
    )
    return len(vocab)


def hf_model(seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(
        vocab_size=260, n_positions=48, n_embd=32, n_layer=2, n_head=4, bos_token_id=259, eos_token_id=259
    )
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**args, **kw})).eval()
    with torch.no_grad():  # random biases and norms too, so a missed tensor or transpose shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return model


def save_hf(model, folder, fmt: str, prefix: bool):
    """A HF GPT-2 folder: weights as safetensors or a torch .bin, names with or without ``transformer.``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    model.config.to_json_file(folder / "config.json")
    state = {k: v.contiguous().clone() for k, v in model.state_dict().items()}
    if not prefix:  # GPT2Model's layout: no prefix, no head (the head is tied to wte)
        state = {k.removeprefix("transformer."): v for k, v in state.items() if k != "lm_head.weight"}
    elif model.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    if fmt == "safetensors":
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    else:
        torch.save(state, folder / "pytorch_model.bin")
    write_tokenizer(folder)
    return folder


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("prefix", [True, False], ids=["transformer.", "no-prefix"])
def test_import_logits_equal_transformers(tmp_path, fmt, prefix, capsys):
    hf = hf_model(n_inner=48 if prefix else None)
    src = save_hf(hf, tmp_path / "hf", fmt, prefix)
    assert cli(["import", "gpt2", str(src), "--out", str(tmp_path / "out")]) == 0
    assert "imported gpt2 model" in capsys.readouterr().out
    model, tok, cfg = load_model(tmp_path / "out")
    x = torch.randint(0, 260, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], hf(x).logits, atol=1e-5, rtol=1e-5)
    assert tok.n_vocab == 260 and tok.eot_id == 259
    assert tok.encode(" the") == [258]


def test_untied_head_and_official_save_pretrained(tmp_path):
    hf = hf_model(seed=1, tie_word_embeddings=False)
    hf.save_pretrained(tmp_path / "hf")
    write_tokenizer(tmp_path / "hf")
    assert cli(["import", "gpt2", str(tmp_path / "hf"), "--out", str(tmp_path / "out")]) == 0
    model, _, cfg = load_model(tmp_path / "out")
    assert not cfg.tie_embeddings
    x = torch.randint(0, 260, (1, 48))
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], hf(x).logits, atol=1e-5, rtol=1e-5)


def test_export_back_to_transformers(tmp_path):
    hf = hf_model(seed=2)
    save_hf(hf, tmp_path / "hf", "safetensors", True)
    assert cli(["import", "gpt2", str(tmp_path / "hf"), "--out", str(tmp_path / "out")]) == 0
    model, _, _ = load_model(tmp_path / "out")
    fresh = transformers.GPT2LMHeadModel(hf.config).eval()
    result = fresh.load_state_dict(hf_state_dict(model), strict=False)
    assert not result.unexpected_keys and set(result.missing_keys) <= {"lm_head.weight"}  # tied: one matrix
    x = torch.randint(0, 260, (1, 16))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x).logits, hf(x).logits, atol=1e-6, rtol=1e-6)


def test_generation_from_imported_model_matches_transformers_greedy(tmp_path, capsys):
    from ownlm.generate import generate

    hf = hf_model(seed=3)
    save_hf(hf, tmp_path / "hf", "safetensors", True)
    cli(["import", "gpt2", str(tmp_path / "hf"), "--out", str(tmp_path / "out")])
    model, tok, _ = load_model(tmp_path / "out")
    prompt = tok.encode("hello the world")
    ours = generate(model, prompt, 20, temperature=0)[0]
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False, eos_token_id=None,
                         pad_token_id=259, use_cache=True)  # fmt: skip
    assert ours == theirs[0, len(prompt) :].tolist()
    capsys.readouterr()
    assert (
        cli(["generate", str(tmp_path / "out"), "--prompt", "the", "--max-new-tokens", "5", "--seed", "0"])
        == 0
    )
    assert capsys.readouterr().out.startswith("the")


def test_shared_gpt2_folders_both_layouts(shared_data, tmp_path, capsys):
    toks = {}
    for name in ["lm-buddy_fake_gpt2", "lm-buddy_tiny_gpt2"]:
        src = shared_data / "models" / name
        assert cli(["import", "gpt2", str(src), "--out", str(tmp_path / name)]) == 0
        model, toks[name], cfg = load_model(tmp_path / name)
        hf = transformers.GPT2LMHeadModel.from_pretrained(src).eval()
        x = torch.randint(0, cfg.vocab_size, (1, 12))
        with torch.no_grad():
            torch.testing.assert_close(model(x)[0], hf(x).logits, atol=1e-5, rtol=1e-5)
    # the first carries GPT-2's real tokenizer; the second's 21-token vocabulary is not byte-level: warned
    assert toks["lm-buddy_fake_gpt2"].encode("Hello world") == [15496, 995]
    assert toks["lm-buddy_tiny_gpt2"] is None
    assert "tokenizer not imported" in capsys.readouterr().err


def test_model_name_downloads_through_huggingface_hub(tmp_path, monkeypatch, capsys):
    import huggingface_hub

    src = save_hf(hf_model(), tmp_path / "cache", "safetensors", True)
    calls = []

    def fake_download(repo_id, revision=None, allow_patterns=None):
        calls.append((repo_id, revision))
        return str(src)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert cli(["import", "gpt2", "openai-community/gpt2", "--out", str(tmp_path / "out")]) == 0
    assert calls == [("openai-community/gpt2", None)] and (tmp_path / "out" / "model.safetensors").is_file()

    def offline(repo_id, revision=None, allow_patterns=None):
        raise OSError("no connection")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    assert cli(["import", "gpt2", "gpt2", "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "downloading it from the Hugging Face Hub failed" in err and "no connection" in err
    assert not (tmp_path / "out2").exists()


def test_bad_folders_exit_2_without_output(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["import", "gpt2", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli(["import", "gpt2", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "config.json" in capsys.readouterr().err

    src = save_hf(hf_model(), tmp_path / "noweights", "safetensors", True)
    (src / "model.safetensors").unlink()
    assert cli(["import", "gpt2", str(src), "--out", str(out)]) == 2
    assert (
        "no model.safetensors, model.safetensors.index.json or pytorch_model.bin" in capsys.readouterr().err
    )

    src = save_hf(hf_model(), tmp_path / "corrupt", "safetensors", True)
    (src / "model.safetensors").write_bytes(b"\x00" * 100)
    assert cli(["import", "gpt2", str(src), "--out", str(out)]) == 2
    assert "cannot read weights" in capsys.readouterr().err

    src = save_hf(hf_model(), tmp_path / "wrongshape", "safetensors", True)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "n_embd": 64}))
    assert cli(["import", "gpt2", str(src), "--out", str(out)]) == 2
    assert "config.json describes" in capsys.readouterr().err

    (src / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    assert cli(["import", "gpt2", str(src), "--out", str(out)]) == 2
    assert "model_type 'bert'" in capsys.readouterr().err
    assert not out.exists()
