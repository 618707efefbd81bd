"""Vocabularies inside imported models: GGUF and Hugging Face folders -> Tokenizer, ids kept.

The real model (SmolLM2-135M-Instruct, Q4_1 GGUF) is found through OWNLM_TEST_GGUF or
~/.cache/ownlm-test/SmolLM2-135M-Instruct.Q4_1.gguf; those tests skip when it is absent. The synthetic
GGUF tests need only the gguf package.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ownlm.errors import UserError
from ownlm.tokenizer import Tokenizer
from ownlm.tokenizer.chat import load_template, save_template
from ownlm.tokenizer.export import bytes_to_unicode
from ownlm.tokenizer.pretokenize import FUSED
from ownlm.tokenizer.vocab_import import (
    chat_template_from_gguf,
    chat_template_from_hf,
    gguf_fields,
    special_ids_from_gguf,
    special_ids_from_hf,
    tokenizer_from_gguf,
    tokenizer_from_hf,
)

gguf = pytest.importorskip("gguf")

GGUF_PATH = Path(
    os.environ.get("OWNLM_TEST_GGUF") or Path.home() / ".cache/ownlm-test/SmolLM2-135M-Instruct.Q4_1.gguf"
)
MIXED = (
    "Hello world! It's 2024: we'll see 12345678 apples, x  1 and 3.14159.\n\n\n"
    "    def f(x):\n\treturn x ** 2  # comment\r\n"
    "emoji \U0001f600\U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467 caf\u00e9 na\u00efve e\u0301\n"
    "\u4f60\u597d\uff0c\u4e16\u754c\u3002\u65e5\u672c\u8a9e \ud55c\uad6d\uc5b4   trailing   \n"
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
)

# Surrogates and unassigned characters are left out: the fast engine (tiktoken's Rust regex) and the reference
# (the `regex` module) read \p{L} from Unicode tables of different versions, so a character assigned after
# Python's Unicode 14 (e.g. U+32C80, Unicode 17) is a letter to one and unassigned to the other.
ASSIGNED_ONLY = ("Cs", "Cn")


def spell(b: bytes) -> str:
    table = bytes_to_unicode()
    return "".join(table[x] for x in b)


# ------------------------------------------------------------------ a tiny synthetic GGUF
CORPUS = ["the cat sat on the mat. 123 456! the hat -- that's all.\n" * 30, ".... x\tthe  them"]


@pytest.fixture(scope="module")
def base() -> Tokenizer:
    return Tokenizer.train(CORPUS, vocab_size=300, pattern="gpt2", special_tokens={}, progress=False)


def write_gguf(path, base: Tokenizer, missing=(0x04,), pre="gpt-2"):
    """``base``'s vocabulary laid out as an imported file would: control tokens first, a user-defined one,
    the bytes (some missing), an unused row, then the merges. Returns the map base id -> file id."""
    names, types, new = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"], [3, 3, 3, 4], {}
    for b in range(256):
        if b not in missing:
            new[base.byte_to_id[b]] = len(names)
            names.append(spell(bytes([b])))
            types.append(1)
    names.append("[UNUSED]")
    types.append(5)
    for k in range(len(base.merges)):
        new[256 + k] = len(names)
        names.append(spell(base.vocab[256 + k]))
        types.append(1)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(names)
    w.add_token_types(types)
    w.add_token_merges([f"{spell(base.vocab[a])} {spell(base.vocab[b])}" for a, b in base.merges])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return new


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory, base):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    new = write_gguf(path, base)
    return gguf_fields(path), new


def test_synthetic_gguf_keeps_its_ids(synthetic):
    fields, new = synthetic
    tok = tokenizer_from_gguf(fields)
    assert tok.special_tokens == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<tool>": 3}
    assert tok.byte_ids[0x04] is None and tok.n_vocab == len(fields["tokenizer.ggml.tokens"])
    unused = fields["tokenizer.ggml.tokens"].index("[UNUSED]")
    assert unused not in tok.vocab and unused not in tok.special_ids  # a hole: no text maps to it
    ids = special_ids_from_gguf(fields, tok)
    assert (ids.bos, ids.eos, ids.eot, ids.pad, ids.add_bos) == (1, 2, 2, None, False)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text(
        st.characters(blacklist_categories=ASSIGNED_ONLY) | st.sampled_from(list("the .\x04\t1")), max_size=50
    )
)
def test_synthetic_gguf_encodes_like_its_source(synthetic, base, s):
    """Same text, same tokens: the imported ids are the source's ids renumbered (the missing byte dropped)."""
    fields, new = synthetic
    tok = tokenizer_from_gguf(fields)
    ids = tok.encode(s, disallowed_special=())
    assert ids == tok.encode_reference(s, disallowed_special=())
    if "\x04" not in s:
        assert ids == [new[i] for i in base.encode(s)]
    assert tok.decode_bytes(ids) == s.encode("utf-8").replace(b"\x04", b"")


def test_specials_and_user_defined_tokens(synthetic):
    tok = tokenizer_from_gguf(synthetic[0])
    ids = tok.encode("<tool>x<|im_end|>", allowed_special="all")
    assert ids[0] == 3 and ids[-1] == 2 and tok.decode(ids) == "<tool>x<|im_end|>"
    with pytest.raises(ValueError, match="special token"):
        tok.encode("<|im_end|>")
    assert 2 not in tok.encode_ordinary("<|im_end|>")


def test_synthetic_gguf_saves_and_loads(synthetic, tmp_path):
    tok = tokenizer_from_gguf(synthetic[0])
    tok.save(tmp_path)
    again = Tokenizer.load(tmp_path)
    assert again == tok and again.encode(MIXED, allowed_special="all") == tok.encode(
        MIXED, allowed_special="all"
    )


def test_pre_tokenizer_names(tmp_path, base):
    path = tmp_path / "s.gguf"
    write_gguf(path, base, pre="smollm")
    assert tokenizer_from_gguf(gguf_fields(path)).pattern == FUSED["smollm"]
    write_gguf(path, base, pre="falcon")
    assert isinstance(tokenizer_from_gguf(gguf_fields(path)).pattern, list)
    write_gguf(path, base, pre="no-such-split")
    with pytest.raises(UserError, match=r"unknown pre-tokenizer 'no-such-split'.*smollm"):
        tokenizer_from_gguf(gguf_fields(path))


def test_sentencepiece_and_other_models_are_refused():
    with pytest.raises(UserError, match="SentencePiece .*Llama 2, Mistral v0.1, Gemma"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<s>"]})
    with pytest.raises(UserError, match="'bert'"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "bert"})


# ------------------------------------------------------------------ the real model
@pytest.fixture(scope="module")
def smollm():
    if not GGUF_PATH.is_file():
        pytest.skip(f"SmolLM2 GGUF not found at {GGUF_PATH} (set OWNLM_TEST_GGUF)")
    fields = gguf_fields(GGUF_PATH)
    return fields, tokenizer_from_gguf(fields)


@pytest.fixture(scope="module")
def hf_smollm(smollm, tmp_path_factory):
    """transformers' tokenizer converted from the same GGUF, with the split SmolLM2 was published with
    (Digits(individual) then ByteLevel: transformers' GGUF converter leaves the Digits step out), saved as a
    Hugging Face folder."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import pre_tokenizers

    hf = transformers.AutoTokenizer.from_pretrained(str(GGUF_PATH.parent), gguf_file=GGUF_PATH.name)
    hf.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    folder = tmp_path_factory.mktemp("hf")
    hf.save_pretrained(folder)
    return hf, folder


def test_smollm_vocabulary(smollm):
    fields, tok = smollm
    assert tok.n_vocab == 49152 and len(tok.merges) == 48900 and len(tok.special_tokens) == 17
    assert sum(i is None for i in tok.byte_ids) == 21 and tok.pattern == FUSED["smollm"]
    assert tok._tiktoken() is not None
    ids = special_ids_from_gguf(fields, tok)
    assert (ids.bos, ids.eos, ids.unk, ids.pad, ids.eot) == (1, 2, 0, 2, 2)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.text(
        st.characters(blacklist_categories=ASSIGNED_ONLY) | st.sampled_from(list(" \n\t0123456789")),
        max_size=60,
    )
)
def test_smollm_fast_engine_equals_the_reference(smollm, s):
    tok = smollm[1]
    assert tok.encode_ordinary(s) == tok.encode_reference(s, disallowed_special=())


def test_smollm_ids_equal_transformers(smollm, hf_smollm):
    _, tok = smollm
    hf, _ = hf_smollm
    ids = tok.encode(MIXED, allowed_special="all")
    assert (
        ids
        == hf.encode(MIXED, add_special_tokens=False)
        == tok.encode_reference(MIXED, allowed_special="all")
    )
    for text in MIXED.splitlines(keepends=True) + ["x\x04y", ".\x04.", "\U00050000!"]:
        assert tok.encode(text, allowed_special="all") == hf.encode(text, add_special_tokens=False), text


def test_smollm_hf_folder_imports_to_the_same_tokenizer(smollm, hf_smollm):
    fields, tok = smollm
    _, folder = hf_smollm
    assert tokenizer_from_hf(folder) == tok
    assert special_ids_from_hf(folder, tok).eos == 2


def _llama_cpp_tokenize(texts):
    """llama.cpp's ids for ``texts`` (add_bos=False, special=True), or None when llama-cpp-python is not
    available (in this interpreter, or in OWNLM_LLAMA_PYTHON's)."""
    script = (
        "import json, sys, llama_cpp\n"
        "m = llama_cpp.Llama(sys.argv[1], vocab_only=True, verbose=False)\n"
        "print(json.dumps([m.tokenize(t.encode(), add_bos=False, special=True) for t in json.load(sys.stdin)]))\n"
    )
    python = os.environ.get("OWNLM_LLAMA_PYTHON")
    if not python:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            return None
        python = sys.executable
    out = subprocess.run(
        [python, "-c", script, str(GGUF_PATH)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_smollm_ids_equal_llama_cpp(smollm):
    """llama.cpp applies SmolLM's split in two stages (digits, then GPT-2's) like ours. It drops a byte the
    vocabulary lacks after merging, not before, so texts here avoid those bytes (see test_bpe)."""
    _, tok = smollm
    texts = [MIXED, *MIXED.splitlines(keepends=True), "x  1 2  34", "  \n\n  \t end  "]
    theirs = _llama_cpp_tokenize(texts)
    if theirs is None:
        pytest.skip("llama-cpp-python is not importable (set OWNLM_LLAMA_PYTHON to a Python that has it)")
    assert [tok.encode(t, allowed_special="all") for t in texts] == theirs


# ------------------------------------------------------------------ the model's own chat template
CHATS = [
    [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4, of course.\n"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi <|im_end|> there\n\n  "},
        {"role": "assistant", "content": "Hello! \U0001f600"},
        {"role": "user", "content": "\u4f60\u597d 12345"},
        {"role": "assistant", "content": "  def f(x):\n\treturn x"},
    ],
]


def test_synthetic_gguf_chat_template(synthetic):
    fields, _ = synthetic
    tok = tokenizer_from_gguf(fields)
    t = chat_template_from_gguf(fields, tok)
    assert t.to_jinja() == fields["tokenizer.chat_template"] and t.stop_ids(tok) == [2]
    assert chat_template_from_gguf({**fields, "tokenizer.chat_template": None}, tok) is None


def test_smollm_chat_ids_equal_transformers(smollm, hf_smollm, tmp_path):
    fields, tok = smollm
    hf, folder = hf_smollm
    template = chat_template_from_gguf(fields, tok)
    assert template.to_jinja() == hf.chat_template and template.stop_ids(tok) == [2]
    save_template(tmp_path, template)
    template = load_template(tmp_path)
    assert chat_template_from_hf(folder, tokenizer_from_hf(folder)) == template
    for msgs in CHATS:
        clean = all(
            "<|im_" not in m["content"] for m in msgs
        )  # transformers lets message text inject markers
        ids, mask = template.encode(tok, msgs)
        theirs = hf.apply_chat_template(msgs, tokenize=True, return_dict=False)
        if clean:
            assert ids == list(theirs)
        else:
            assert (
                tok.decode(ids) == hf.decode(theirs)
                and ids.count(2) == len(msgs) == list(theirs).count(2) - 1
            )
        learned = tok.decode([i for i, k in zip(ids, mask) if k])
        replies = [m["content"] + "<|im_end|>" for m in msgs if m["role"] == "assistant"]
        assert re.fullmatch(
            "".join(r"\n?" + re.escape(r) for r in replies), learned
        )  # "\n  def" is one token
        prompt = template.encode_prompt(tok, msgs[:-1])
        if clean:
            assert prompt == list(
                hf.apply_chat_template(
                    msgs[:-1], tokenize=True, add_generation_prompt=True, return_dict=False
                )
            )
        if not msgs[-1]["content"][:1].isspace():  # else the header's newline and the reply share a token
            assert ids[: len(prompt)] == prompt


# ------------------------------------------------------------------ Hugging Face folders made by `tokenizers`
LLAMA3_HF = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
HF_CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 2024; we'll see 12345 foxes!\n\n",
    "Caf\u00e9 na\u00efve co\u00f6perate -- \u4f60\u597d\uff0c\u4e16\u754c \U0001f600\U0001f44d\n",
    "    def f(x):\n\treturn x ** 2  # comment\r\n  THEY'LL  DON'T\n",
] * 20


def hf_folder(path, split: str, ignore_merges: bool):
    """A tiny byte-level BPE trained by `tokenizers` with Llama 3's split (one regex) or SmolLM's (digits, then
    ByteLevel's own regex), saved as a Hugging Face folder; special tokens come first, at ids 0 and 1."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    hf = tokenizers.Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if split == "qwen2":  # Qwen2: text in NFC first, then Llama 3's split with one digit per piece
        hf.normalizer = tokenizers.normalizers.NFC()
        split, regex_ = "llama3", LLAMA3_HF.replace(r"\p{N}{1,3}", r"\p{N}")
    else:
        regex_ = LLAMA3_HF
    if split == "llama3":
        steps = [
            pre_tokenizers.Split(tokenizers.Regex(regex_), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    else:
        steps = [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    hf.pre_tokenizer = pre_tokenizers.Sequence(steps)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=["<|begin_of_text|>", "<|eot_id|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(HF_CORPUS, trainer)
    path.mkdir(parents=True, exist_ok=True)
    hf.save(str(path / "tokenizer.json"))
    config = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "chat_template": "{{ messages[0]['content'] }}",
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return hf


@pytest.mark.parametrize(
    "split, ignore_merges", [("llama3", True), ("llama3", False), ("smollm", False), ("qwen2", False)]
)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hf_folder_encodes_like_tokenizers(tmp_path_factory, split, ignore_merges, data):
    folder = tmp_path_factory.getbasetemp() / f"hf-{split}-{ignore_merges}"
    if not (folder / "tokenizer.json").is_file():
        hf_folder(folder, split, ignore_merges)
    import tokenizers

    hf = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok = tokenizer_from_hf(folder)
    assert (
        tok.special_tokens == {"<|begin_of_text|>": 0, "<|eot_id|>": 1} and tok.ignore_merges == ignore_merges
    )
    pieces = st.sampled_from(
        ["THEY'LL", "don't", " 12345", "\n\n", "  ", "\t", "\u00e9", "e\u0301", "\u212b", "fox", "<|eot_id|>"]
    )
    text = data.draw(
        st.lists(
            st.text(st.characters(blacklist_categories=ASSIGNED_ONLY), max_size=6) | pieces, max_size=8
        ).map("".join)
    )
    ids = tok.encode(text, allowed_special="all")
    assert tok._tiktoken() is not None  # the fast engine, on ranks mapped to the file's ids
    assert ids == hf.encode(text, add_special_tokens=False).ids
    assert ids == tok.encode_reference(text, allowed_special="all")
    ids_special = special_ids_from_hf(folder, tok)
    assert (ids_special.bos, ids_special.eos, ids_special.eot) == (0, 1, 1)
