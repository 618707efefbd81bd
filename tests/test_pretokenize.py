"""Pre-tokenizers by llama.cpp name: fused regex == staged split, parity with Hugging Face's pre-tokenizers."""

import unicodedata

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from ownlm.errors import UserError
from ownlm.tokenizer.pretokenize import FUSED, STAGES, canonical_name, pretokenizer, split_stages

# Text rich in the characters where splits disagree: digits next to spaces, runs of mixed whitespace,
# apostrophes, punctuation, letters of several scripts, CJK, emoji, combining marks, other numerics.
TEXT = st.text(
    st.sampled_from(list("ab Z  \t\n\r\x0b\x0c\x1c\u00a0\u2003'sStTlLdDmvVre079\u0663\u00bd\u2162.,!?-_$+<=>^~|`")
                    + ["\u4f60", "\uac00", "\u00e9", "\u0301", "\U0001f600", "\u0416", "\u3002", "\uff01"])
    | st.characters(blacklist_categories=("Cs",)),
    max_size=60,
)  # fmt: skip
# For parity with another engine: characters assigned since Unicode 3.2 (the engines' Unicode tables are of
# different versions, so characters assigned lately are classed differently).
OLD_TEXT = st.text(
    st.sampled_from(list("ab Z  \t\n\r\x0b'sStTlLdD079\u0663\u00bd.,!?-$+<=>^~|`\u4f60\u0301"))
    | st.characters(blacklist_categories=("Cs",)).filter(lambda c: unicodedata.ucd_3_2_0.category(c) != "Cn"),
    max_size=60,
)


@pytest.mark.parametrize("name", sorted(FUSED))
@settings(max_examples=400, deadline=None)
@given(TEXT)
def test_fused_regex_splits_like_the_stages(name, text):
    assert regex.findall(FUSED[name], text) == split_stages(text, STAGES[name])


@settings(max_examples=200, deadline=None)
@given(TEXT)
def test_stages_keep_every_character(text):
    for stages in STAGES.values():
        assert "".join(split_stages(text, stages)) == text


def _hf_pieces(pre, text):
    from ownlm.tokenizer.export import bytes_to_unicode

    back = {c: b for b, c in bytes_to_unicode().items()}
    return [bytes(back[c] for c in p).decode("utf-8") for p, _ in pre.pre_tokenize_str(text)]


@settings(max_examples=300, deadline=None)
@given(OLD_TEXT)
def test_smollm_splits_like_its_hugging_face_pre_tokenizer(text):
    """SmolLM2's tokenizer.json: Sequence[Digits(individual), ByteLevel(use_regex)]."""
    pre_tokenizers = pytest.importorskip("tokenizers.pre_tokenizers")
    pre = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    assert regex.findall(pretokenizer("smollm"), text) == _hf_pieces(pre, text)


@settings(max_examples=300, deadline=None)
@given(OLD_TEXT)
def test_llama3_splits_like_its_hugging_face_pre_tokenizer(text):
    """Llama 3's tokenizer.json: Split(its regex, isolated) then ByteLevel without a regex."""
    tokenizers = pytest.importorskip("tokenizers")
    hf_regex = (
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
        r"|\s*[\r\n]+|\s+(?!\S)|\s+"
    )
    pre = tokenizers.pre_tokenizers.Sequence(
        [
            tokenizers.pre_tokenizers.Split(tokenizers.Regex(hf_regex), "isolated"),
            tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    assert regex.findall(pretokenizer("llama-bpe"), text) == _hf_pieces(pre, text)


def test_names_and_aliases():
    assert canonical_name("starcoder") == "smollm" and canonical_name("gpt-2") == "gpt2"
    assert isinstance(pretokenizer("deepseek-llm"), list) and isinstance(pretokenizer("qwen2"), str)
    assert split_stages("1234567 x", STAGES["falcon"]) == ["123", "456", "7", " x"]
    assert split_stages("a+b", STAGES["default"]) == ["a", "+", "b"]


def test_unknown_name_is_one_clear_error():
    with pytest.raises(UserError, match=r"unknown pre-tokenizer 'tekken-9'.*knows: .*smollm"):
        pretokenizer("tekken-9")
