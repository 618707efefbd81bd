"""Pre-tokenizers of imported vocabularies, by the names llama.cpp writes in ``tokenizer.ggml.pre``.

Before BPE, text is cut into pieces; merges never cross a piece boundary. A pre-tokenizer here is a
*sequence of stages*, each a regex (llama.cpp's ``regex_exprs``, Hugging Face's ``Sequence`` of ``Split`` /
``Digits`` / ``ByteLevel``): every stage cuts each piece of the previous stage further into its matches,
and the text between two matches (a *gap*) stays a piece of its own, so no character is ever lost.

One stage with a regex that matches every character is the classic single pattern (``findall``), which
tiktoken's Rust engine runs fast. Where a sequence of stages is provably the same split as one regex, the
fused regex is used (``FUSED``; the proof is a property test: fused split == staged split on random text);
the other sequences are split stage by stage in Python (``split_stages``) before the BPE.

>>> split_stages("x  12 ab", STAGES["smollm"])
['x', '  ', '1', '2', ' ab']
>>> regex.findall(FUSED["smollm"], "x  12 ab")
['x', '  ', '1', '2', ' ab']
"""

from __future__ import annotations

from collections.abc import Sequence

import regex

from ownlm.errors import UserError

# GPT-2's split as llama.cpp writes it: no catch-all at the end, the text it leaves is a gap (a piece).
GPT2_STEP = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
# Llama 3's split (tiktoken's cl100k with case-insensitive contractions spelled out, as llama.cpp does).
LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2: as Llama 3 but one digit per piece.
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
# DeepSeek LLM's letters: Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee... as explicit ranges.
_DEEPSEEK_LETTERS = (
    "A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u01bc-\u01bf\u01c4-\u0293\u0295-\u02af"
    "\u0370-\u0373\u0376\u0377\u037b-\u037d\u037f\u0386\u0388-\u038a\u038c\u038e-\u03a1\u03a3-\u03f5"
    "\u03f7-\u0481\u048a-\u052f\u0531-\u0556\u10a0-\u10c5\u13a0-\u13f5\u13f8-\u13fd\u1c90-\u1cba"
    "\u1cbd-\u1cbf\u1d00-\u1d2b\u1d6b-\u1d77\u1d79-\u1d9a\u1e00-\u1f15\u1f18-\u1f1d\u1f20-\u1f45"
    "\u1f48-\u1f4d\u1f50-\u1f57\u1f59\u1f5b\u1f5d\u1f5f-\u1f7d\u1f80-\u1fb4\u1fb6-\u1fbc\u1fbe"
    "\u1fc2-\u1fc4\u1fc6-\u1fcc\u1fd0-\u1fd3\u1fd6-\u1fdb\u1fe0-\u1fec\u1ff2-\u1ff4\u1ff6-\u1ffc"
    "\u2102\u2107\u210a-\u2113\u2115\u2119-\u211d\u2124\u2126\u2128\u212a-\u212d\u212f-\u2134\u2139"
    "\u213c-\u213f\u2145-\u2149\u214e\u2183\u2184\u2c00-\u2c7b\u2c7e-\u2ce4\u2ceb-\u2cee\u2cf2\u2cf3"
    "\ua640-\ua66d\ua680-\ua69b\ua722-\ua76f\ua771-\ua787\ua78b-\ua78e\uab70-\uabbf\ufb00-\ufb06"
    "\ufb13-\ufb17\uff21-\uff3a\uff41-\uff5a\U00010400-\U0001044f\U000104b0-\U000104d3"
    "\U000104d8-\U000104fb\U00010c80-\U00010cb2\U00010cc0-\U00010cf2\U000118a0-\U000118df"
    "\U0001e900-\U0001e943"
)
_CJK = "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+"  # CJK ideographs, then U+0800..U+4E00, then Hangul

# name -> the stages, in order, as llama.cpp applies them for that ``tokenizer.ggml.pre``
STAGES: dict[str, list[str]] = {
    "default": [r"[\p{P}\$\+<=>\^~\|]+", GPT2_STEP, r"\p{N}+", r"[0-9][0-9][0-9]"],
    "gpt2": [GPT2_STEP],
    "llama-bpe": [LLAMA3],
    "qwen2": [QWEN2],
    "smollm": [r"\p{N}", GPT2_STEP],
    "falcon": [r"[\p{P}\$\+<=>\^~\|`]+", GPT2_STEP, r"[0-9][0-9][0-9]"],
    "deepseek-llm": [
        r"[\r\n]",
        r"\s?[" + _DEEPSEEK_LETTERS + "]+",
        "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
        r"\s+$",
        _CJK,
        r"\p{N}+",
    ],
    "deepseek-coder": [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK, r"\p{N}"],
}
# Other names llama.cpp gives the same split (and the name used here).
ALIASES = {
    "gpt-2": "gpt2", "mpt": "gpt2", "olmo": "gpt2", "jais": "gpt2", "phi-2": "gpt2",
    "llama3": "llama-bpe", "llama-v3": "llama-bpe", "dbrx": "llama-bpe", "smaug-bpe": "llama-bpe",
    "falcon3": "llama-bpe", "chatglm-bpe": "llama-bpe",
    "stablelm2": "qwen2", "deepseek-r1-qwen": "qwen2", "megrez": "qwen2",
    "starcoder": "smollm", "refact": "smollm", "command-r": "smollm", "codeshell": "smollm",
    "exaone": "smollm", "minerva-7b": "smollm",
}  # fmt: skip
# Splits where llama.cpp (and Hugging Face) use a whole piece that is in the vocabulary as one token,
# before any merge ("ignore_merges").
IGNORE_MERGES = {"llama-bpe"}

# One regex per name that splits exactly as its stages do (tests/test_pretokenize.py proves it on random
# text). Digits alone (smollm): a digit is a piece; whitespace before a digit ends the previous piece, so
# the "\s+(?!\S)" of the second stage also accepts a digit after it.
FUSED: dict[str, str] = {
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "smollm": r"""\p{N}|'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?[^\s\p{L}\p{N}]++|\s+(?![^\s\p{N}])|\s""",
    "llama-bpe": LLAMA3,
    "qwen2": QWEN2,
}


def known_names() -> list[str]:
    """Every ``tokenizer.ggml.pre`` value this module understands."""
    return sorted({*STAGES, *ALIASES})


def canonical_name(name: str) -> str:
    """The name used here for llama.cpp's ``name``; a ``UserError`` listing the known ones otherwise.

    >>> canonical_name("starcoder")
    'smollm'
    """
    if name in STAGES:
        return name
    if name in ALIASES:
        return ALIASES[name]
    raise UserError(
        f"unknown pre-tokenizer {name!r} (tokenizer.ggml.pre); ownlm knows: {', '.join(known_names())}"
    )


def pretokenizer(name: str) -> str | list[str]:
    """The ``Tokenizer.pattern`` for llama.cpp's pre-tokenizer ``name``: one fused regex where there is one,
    else the list of stages.

    >>> pretokenizer("gpt-2") == FUSED["gpt2"]
    True
    >>> len(pretokenizer("falcon"))
    3
    """
    name = canonical_name(name)
    return FUSED.get(name) or list(STAGES[name])


def name_of(pattern) -> str | None:
    """The name here of a ``Tokenizer.pattern`` that is one of ours (fused or staged), else None.

    >>> name_of(pretokenizer("starcoder"))
    'smollm'
    """
    for name, stages in STAGES.items():
        if pattern == FUSED.get(name) or pattern == stages:
            return name
    return None


def split_stages(text: str, stages: Sequence[str | regex.Pattern]) -> list[str]:
    """Cut ``text`` by each stage in turn; matches and the gaps between them are pieces (none is lost).

    >>> split_stages("ab12, c", [r"\\p{N}+", r"\\p{L}+"])
    ['ab', '12', ', ', 'c']
    """
    pieces = [text] if text else []
    for stage in stages:
        rx = regex.compile(stage) if isinstance(stage, str) else stage
        out: list[str] = []
        for piece in pieces:
            pos = 0
            for m in rx.finditer(piece):
                if m.start() == m.end():
                    continue
                if m.start() > pos:
                    out.append(piece[pos : m.start()])
                out.append(m.group())
                pos = m.end()
            if pos < len(piece):
                out.append(piece[pos:])
        pieces = out
    return pieces


def clean_surrogates(text: str) -> str:
    """Replace lone surrogates by U+FFFD (and join surrogate pairs), the way tiktoken does."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
