"""``ownlm export --to hf``: the folder loads in transformers with no ownlm code and computes the same logits
(within 1e-4) for the GPT-2 and the Llama block in several option mixes; greedy generation and token ids agree;
the chat template renders the ids ownlm trains on; bad input is one line and exit 2."""

import json

import pytest
import torch
from model_samples import make_run

from ownlm.cli import main as cli
from ownlm.generate import generate
from ownlm.io import mark_output
from ownlm.model.checkpoint import save_model
from ownlm.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")

TEXT = (
    "The quick brown fox jumps over the lazy dog. It's 2024 and we'll export 12345 models!\n"
    "def hello(name):\n    return f'Hello, {name}'\n\n  Ünïcödé café naïve — «quotes» 日本語 🙂\n"
)
PROBES = [
    "Hello world",
    "The lazy dog's café, 2024.",
    "  leading spaces\n\n\ttabs and\r\nnewlines  ",
    "日本語のテキスト 🙂👍🏽 e\u0301",
    "def f(x):\n    return x ** 2  # comment",
    "ends with <|endoftext|> and more",
    "",
]

GPT2 = dict(pos="learned", norm="layernorm", mlp="gelu")
MODERN = dict(pos="rope", norm="rmsnorm", mlp="swiglu")
CONFIGS = {
    "gpt2": dict(GPT2),
    "gpt2-untied-nobias": dict(GPT2, tie_embeddings=False, bias=False, mlp_hidden=48),
    "llama": dict(MODERN, bias=False),
    "llama-gqa-bias-untied": dict(MODERN, n_kv_head=2, bias=True, tie_embeddings=False, rope_theta=500.0),
    "llama-mqa-eps": dict(MODERN, n_kv_head=1, bias=False, norm_eps=1e-6, mlp_hidden=40),
}


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train([TEXT * 3], vocab_size=300, progress=False)


def export(run, out, *extra):
    return cli(["export", str(run), "--to", "hf", "--out", str(out), *extra])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_greedy_match_ownlm(tmp_path, tok, name):
    model = make_run(tmp_path / "run", tok, **CONFIGS[name])
    assert export(tmp_path / "run", tmp_path / "hf") == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    expected = "GPT2LMHeadModel" if name.startswith("gpt2") else "LlamaForCausalLM"
    assert type(hf).__name__ == expected
    assert hf.config.vocab_size == model.config.vocab_size == 320  # the padded size, kept
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (2, model.config.block_size), generator=g)  # full context
    with torch.no_grad():
        ours, theirs = model(ids)[0], hf(ids).logits
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max().item() < 1e-4
    prompt = tok.encode("The quick brown")
    want = generate(model, prompt, 12, temperature=0)[0]
    with torch.no_grad():
        got = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                          pad_token_id=0)[0, len(prompt) :].tolist()  # fmt: skip
    assert got == want


def test_tokenizer_ids_and_padded_vocab(tmp_path, tok):
    make_run(tmp_path / "run", tok)
    assert export(tmp_path / "run", tmp_path / "hf") == 0
    at = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert len(at) == tok.n_vocab  # padding rows are model rows, not tokens
    for text in PROBES:
        ids = tok.encode(text, allowed_special="all")
        assert at(text)["input_ids"] == ids, text  # nothing prepended or appended
        assert at.decode(ids) == tok.decode(ids)
    assert at.eos_token == "<|endoftext|>" and at.eos_token_id == tok.eot_id
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert config["eos_token_id"] == gen["eos_token_id"] == tok.eot_id


def test_f16_export_is_close(tmp_path, tok):
    model = make_run(tmp_path / "run", tok, **CONFIGS["llama"])
    assert export(tmp_path / "run", tmp_path / "hf", "--dtype", "f16") == 0
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    from safetensors import safe_open

    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    ids = torch.arange(20)[None] * 7 % 300
    with torch.no_grad():
        diff = (model(ids)[0] - hf(ids).logits).abs().max().item()
    assert 0 < diff < 1e-2


def test_an_export_folder_follows_the_one_output_rule(tmp_path, tok, capsys):
    """An earlier export is replaced (its files rewritten, a user's file beside them left alone); --force empties
    a folder another ownlm command made; a folder ownlm did not make is refused, with or without --force."""
    make_run(tmp_path / "run", tok)
    out = tmp_path / "hf"
    assert export(tmp_path / "run", out) == 0
    exported = (out / "model.safetensors").read_bytes()
    (out / "model.safetensors").write_bytes(b"junk")
    (out / "notes.txt").write_text("mine")
    assert export(tmp_path / "run", out) == 0
    assert (out / "model.safetensors").read_bytes() == exported  # the junk was replaced by the export itself
    assert (out / "notes.txt").read_text() == "mine"
    transformers.AutoModelForCausalLM.from_pretrained(out)  # and the folder loads again
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text("{}")
    for extra in ([], ["--force"]):
        assert export(tmp_path / "run", other, *extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "ownlm did not make it" in err
    assert (
        sorted(p.name for p in other.iterdir()) == ["config.json"]
        and (other / "config.json").read_text() == "{}"
    )
    assert export(tmp_path / "run", tmp_path / "run") == 2  # never into the checkpoint it reads
    corpus = tmp_path / "corpus"  # another ownlm output: replaced only with --force
    corpus.mkdir()
    mark_output(corpus, "ownlm-corpus")
    (corpus / "train.jsonl").write_text("{}\n")
    assert export(tmp_path / "run", corpus) == 2 and "--force" in capsys.readouterr().err
    assert export(tmp_path / "run", corpus, "--force") == 0 and not (corpus / "train.jsonl").exists()


def test_bad_input(tmp_path, tok, capsys):
    assert export(tmp_path / "nope", tmp_path / "hf") == 2
    assert "not found" in capsys.readouterr().err
    model = make_run(tmp_path / "run", tok)
    (tmp_path / "run" / "tokenizer.json").unlink()
    assert export(tmp_path / "run", tmp_path / "hf") == 2
    assert "tokenizer" in capsys.readouterr().err
    save_model(tmp_path / "run", model, tok)
    assert export(tmp_path / "run", tmp_path / "hf", "--dtype", "q8_0") == 2
    assert "--dtype q8_0" in capsys.readouterr().err


CONVERSATIONS = [
    [{"role": "user", "content": "Hello there, how are you?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a dog."},
     {"role": "assistant", "content": "Rex."}, {"role": "user", "content": "Another one, please"}],
    [{"role": "user", "content": "Translate it", "input": "le chien paresseux"}],
]  # fmt: skip


@pytest.mark.parametrize("name", ["chatml", "alpaca"])
def test_chat_template_renders_ownlm_ids(tmp_path, tok, name):
    from ownlm.tokenizer import chat

    template = chat.get_template(name)
    tok2 = chat.add_special_tokens(tok, template.special_tokens())
    make_run(tmp_path / "run", tok2, **CONFIGS["llama"])
    chat.save_template(tmp_path / "run", template)
    assert export(tmp_path / "run", tmp_path / "hf") == 0
    at = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert at.chat_template == template.to_jinja()
    for messages in CONVERSATIONS:
        ids = at.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert list(ids) == template.encode_prompt(tok2, messages), messages
    for special in template.special_tokens():  # declared special: one id each, never split
        assert at.convert_tokens_to_ids(special) == tok2.special_tokens[special]
        assert special in at.all_special_tokens
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    stops = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert sorted(stops) == sorted(template.stop_ids(tok2))


def test_a_lora_run_exports_merged(tmp_path, tok):
    """A LoRA fine-tune (base + adapter.safetensors) exports as plain weights equal to the merged model."""
    from transformers import AutoModelForCausalLM

    from ownlm.model.checkpoint import load_model
    from ownlm.model.lora import LoRAConfig, apply_lora

    model = make_run(tmp_path / "base", tok, **CONFIGS["llama"])
    apply_lora(model, LoRAConfig(rank=4, targets=["all"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained adapter: not zero
    save_model(tmp_path / "lora", model, tok)
    assert json.loads((tmp_path / "lora" / "config.json").read_text())["kind"] == "lm+lora"
    export(tmp_path / "lora", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    merged = load_model(tmp_path / "lora")[0]
    ids = torch.tensor([tok.encode(TEXT)[:32]])
    with torch.no_grad():
        want = model(ids)[0]
        torch.testing.assert_close(merged(ids)[0], want, atol=1e-5, rtol=1e-5)
        got = hf(ids).logits
    torch.testing.assert_close(got, want[..., : got.shape[-1]], atol=1e-4, rtol=1e-4)
