"""Vocabularies inside imported models -> ``Tokenizer``: a GGUF file's ``tokenizer.ggml.*`` keys, or a
Hugging Face folder's ``tokenizer.json`` + ``tokenizer_config.json``.

Both hold a byte-level BPE the way GPT-2 spelled it: every token's bytes written through
``bytes_to_unicode`` (``" the"`` is ``"Ġthe"``), merges as ``"LEFT RIGHT"`` in the order they apply, and
special tokens spelled as themselves. The ids stay the file's ids (``Tokenizer.byte_ids``/``merge_ids``),
so the model's embedding rows need no reordering.

GGUF token types (``tokenizer.ggml.token_type``): 1 normal (a byte or a merge's result), 3 control and
4 user-defined become special tokens (encoded as one id only when allowed, as in chat templates), 2 unknown
becomes a special token too (never produced from text: text bytes without a token are dropped), 5 unused is a
hole (an id no text maps to; decoding it fails), 6 byte (SentencePiece's ``<0x41>``) is refused in a BPE
vocabulary. ``tokenizer.ggml.model = llama`` (SentencePiece: Llama 2, Mistral v0.1, Gemma) is refused.

>>> fields = gguf_fields("SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
>>> tok = tokenizer_from_gguf(fields); special_ids_from_gguf(fields, tok).eos  # doctest: +SKIP
2
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ownlm.errors import UserError
from ownlm.tokenizer.bpe import NORMAL_FORMS, Tokenizer
from ownlm.tokenizer.chat import JinjaTemplate
from ownlm.tokenizer.export import bytes_to_unicode
from ownlm.tokenizer.pretokenize import GPT2_STEP, IGNORE_MERGES, STAGES, canonical_name, pretokenizer

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# Ends of a turn in the chat formats of common models, for vocabularies that do not name theirs.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


@dataclass
class SpecialIds:
    """The ids a model's config names (``None`` when it names none) and whether prompts start with bos."""

    bos: int | None = None
    eos: int | None = None
    unk: int | None = None
    pad: int | None = None
    eot: int | None = None  # end of a chat turn (ChatML's <|im_end|>), else eos
    add_bos: bool = False
    add_eos: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    def config(self) -> dict:
        """The ids a model's ``config.json`` records: ``{"bos_id", "eos_id", "eot_id", "pad_id"}`` (set ones)."""
        ids = {"bos_id": self.bos, "eos_id": self.eos, "eot_id": self.eot, "pad_id": self.pad}
        return {k: v for k, v in ids.items() if v is not None}


def gguf_fields(path: str | os.PathLike) -> dict:
    """A GGUF file's metadata as ``{key: decoded value}`` (strings, numbers, lists), tensors left unread."""
    import gguf

    try:
        reader = gguf.GGUFReader(Path(path))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable GGUF file ({e})") from None
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def _byte_level(where: str):
    """``spelled token -> bytes`` for GPT-2's byte-to-unicode spelling (None when a character is not one)."""
    back = {c: b for b, c in bytes_to_unicode().items()}

    def decode(token: str) -> bytes | None:
        try:
            return bytes(back[c] for c in token)
        except KeyError:
            return None

    return decode


def _build(
    tokens: dict[int, bytes],
    specials: dict[str, int],
    merges: list[tuple[str, str]],
    ids_of: dict[str, int],
    pattern,
    ignore_merges: bool,
    where: str,
) -> Tokenizer:
    """A Tokenizer from ``tokens`` (id -> bytes of each normal token), the spelled ``merges`` and ``ids_of``
    (spelling -> id of the normal tokens)."""
    byte_ids: list[int | None] = [None] * 256
    for i, b in tokens.items():
        if len(b) == 1:
            byte_ids[b[0]] = i
    pairs, merge_ids, made = [], [], set()
    for k, (left, right) in enumerate(merges):
        a, b, new = ids_of.get(left), ids_of.get(right), ids_of.get(left + right)
        if a is None or b is None or new is None:
            raise UserError(
                f"{where}: merge {k} ({left!r} {right!r}) uses or makes a token missing from the vocabulary"
            )
        pairs.append((a, b))
        merge_ids.append(new)
        made.add(new)
    unreachable = [i for i, b in tokens.items() if len(b) > 1 and i not in made]
    if unreachable:
        show = ", ".join(f"{i}" for i in unreachable[:5])
        raise UserError(
            f"{where}: {len(unreachable)} ordinary tokens (ids {show}...) are made by no merge; ownlm's BPE "
            "needs every token longer than a byte to come from a merge"
        )
    try:
        return Tokenizer(
            pairs, pattern, specials, byte_ids=byte_ids, merge_ids=merge_ids, ignore_merges=ignore_merges
        )
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


# ---------------------------------------------------------------------------------------------- GGUF


def tokenizer_from_gguf(fields: dict, where: str = "GGUF file") -> Tokenizer:
    """The tokenizer stored in a GGUF file's metadata (``fields``: key -> decoded value, see ``gguf_fields``).

    >>> tokenizer_from_gguf({"tokenizer.ggml.model": "llama"})
    Traceback (most recent call last):
    ownlm.errors.UserError: GGUF file: its tokenizer is SentencePiece (tokenizer.ggml.model = 'llama': Llama 2, Mistral v0.1, Gemma); ownlm imports byte-level BPE vocabularies only (tokenizer.ggml.model = 'gpt2': GPT-2, Llama 3, Qwen2, SmolLM, Mistral Nemo, ...)
    """
    model = fields.get("tokenizer.ggml.model")
    if model != "gpt2":
        kind = {
            "llama": "SentencePiece (tokenizer.ggml.model = 'llama': Llama 2, Mistral v0.1, Gemma)",
            None: "missing (no tokenizer.ggml.model key)",
        }.get(model, f"{model!r} (tokenizer.ggml.model)")
        raise UserError(
            f"{where}: its tokenizer is {kind}; ownlm imports byte-level BPE vocabularies only "
            "(tokenizer.ggml.model = 'gpt2': GPT-2, Llama 3, Qwen2, SmolLM, Mistral Nemo, ...)"
        )
    names = fields.get("tokenizer.ggml.tokens")
    if not isinstance(names, list) or not names:
        raise UserError(f"{where}: tokenizer.ggml.tokens is missing or empty")
    types = fields.get("tokenizer.ggml.token_type") or [NORMAL] * len(names)
    if len(types) != len(names):
        raise UserError(f"{where}: {len(names)} tokens but {len(types)} token types")
    pre = fields.get("tokenizer.ggml.pre") or "default"
    name = canonical_name(str(pre))
    spelled = _byte_level(where)
    tokens: dict[int, bytes] = {}
    ids_of: dict[str, int] = {}
    specials: dict[str, int] = {}
    for i, (tok, kind) in enumerate(zip(names, types)):
        if kind == NORMAL:
            b = spelled(tok)
            if b is None or not b:
                raise UserError(
                    f"{where}: token {i} {tok[:40]!r} is not spelled as bytes (GPT-2's byte-to-unicode table); "
                    "is this a byte-level BPE vocabulary?"
                )
            tokens[i] = b
            ids_of[tok] = i
        elif kind in (CONTROL, USER_DEFINED, UNKNOWN):
            if tok in specials:
                raise UserError(f"{where}: special token {tok!r} appears twice (ids {specials[tok]} and {i})")
            specials[tok] = i
        elif kind == UNUSED:
            continue
        else:
            raise UserError(
                f"{where}: token {i} {tok[:40]!r} has type {kind}, which a BPE vocabulary cannot have"
            )
    merges = []
    for k, m in enumerate(fields.get("tokenizer.ggml.merges") or []):
        parts = m.split(" ")
        if len(parts) != 2 or not all(parts):
            raise UserError(f"{where}: merge {k} {m[:60]!r} is not 'LEFT RIGHT'")
        merges.append((parts[0], parts[1]))
    return _build(tokens, specials, merges, ids_of, pretokenizer(name), name in IGNORE_MERGES, where)


def special_ids_from_gguf(fields: dict, tokenizer: Tokenizer) -> SpecialIds:
    """bos/eos/unk/pad/eot ids of a GGUF vocabulary (eot: the file's, else a known end-of-turn token)."""

    def get(key):
        v = fields.get(f"tokenizer.ggml.{key}")
        return int(v) if v is not None else None

    eot = get("eot_token_id")
    if eot is None:
        eot = next((tokenizer.special_tokens[s] for s in END_OF_TURN if s in tokenizer.special_tokens), None)
    eos = get("eos_token_id")
    return SpecialIds(
        bos=get("bos_token_id"),
        eos=eos,
        unk=get("unknown_token_id"),
        pad=get("padding_token_id"),
        eot=eot if eot is not None else eos,
        add_bos=bool(fields.get("tokenizer.ggml.add_bos_token", False)),
        add_eos=bool(fields.get("tokenizer.ggml.add_eos_token", False)),
    )


# ---------------------------------------------------------------------------------------------- Hugging Face


def _hf_stages(pre: dict | None, where: str) -> list[str]:
    """A Hugging Face ``pre_tokenizer`` as our stages of regexes (ByteLevel's own split is GPT-2's)."""
    if pre is None:
        return []
    kind = pre.get("type")
    if kind == "Sequence":
        return [s for p in pre.get("pretokenizers", []) for s in _hf_stages(p, where)]
    if kind == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise UserError(f"{where}: ByteLevel with add_prefix_space is not supported")
        return [GPT2_STEP] if pre.get("use_regex", True) else []
    if kind == "Digits":
        return [r"\p{N}" if pre.get("individual_digits") else r"\p{N}+"]
    if kind == "Split":
        pattern = pre.get("pattern", {})
        if pre.get("behavior") != "Isolated" or pre.get("invert"):
            raise UserError(
                f"{where}: Split with behavior {pre.get('behavior')!r} is not supported (only Isolated)"
            )
        if "Regex" in pattern:
            return [pattern["Regex"]]
        if "String" in pattern:
            import regex

            return [regex.escape(pattern["String"])]
    raise UserError(
        f"{where}: pre-tokenizer {kind!r} is not supported (ownlm reads Sequence, Split, Digits, ByteLevel)"
    )


def tokenizer_from_hf(folder: str | os.PathLike) -> Tokenizer:
    """The tokenizer of a Hugging Face model folder (``tokenizer.json``: a byte-level BPE).

    Its ``added_tokens`` become special tokens (encoded as one id only when allowed).

    >>> tok = tokenizer_from_hf("SmolLM2-135M-Instruct/")  # doctest: +SKIP
    """
    from ownlm.io import read_json

    path = Path(folder) / "tokenizer.json" if Path(folder).is_dir() else Path(folder)
    d = read_json(path, what="Hugging Face tokenizer.json")
    where = str(path)
    model = d.get("model") if isinstance(d, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        found = model.get("type") if isinstance(model, dict) else None
        raise UserError(f"{where}: model type {found!r}; ownlm imports byte-level BPE vocabularies only")
    normalizer = _hf_normalizer(d.get("normalizer"), where)
    if (
        model.get("byte_fallback")
        or model.get("continuing_subword_prefix")
        or model.get("end_of_word_suffix")
    ):
        raise UserError(
            f"{where}: byte_fallback / subword prefixes are SentencePiece-style, not byte-level BPE"
        )
    stages = _hf_stages(d.get("pre_tokenizer"), where)
    decoder = (d.get("decoder") or {}).get("type")
    if decoder not in ("ByteLevel", None) or not stages and d.get("pre_tokenizer") is None:
        raise UserError(f"{where}: not a byte-level BPE (decoder {decoder!r})")
    # added_tokens become special tokens, also when the BPE vocabulary lists them too
    specials = {a["content"]: int(a["id"]) for a in d.get("added_tokens", [])}
    special_ids = set(specials.values())
    spelled = _byte_level(where)
    tokens: dict[int, bytes] = {}
    ids_of: dict[str, int] = {}
    for tok, i in model.get("vocab", {}).items():
        if int(i) in special_ids:
            continue
        b = spelled(tok)
        if b is None or not b:
            raise UserError(f"{where}: vocabulary token {tok[:40]!r} is not spelled as bytes")
        tokens[int(i)] = b
        ids_of[tok] = int(i)
    merges = []
    for k, m in enumerate(model.get("merges", [])):
        parts = m.split(" ") if isinstance(m, str) else list(m)
        if len(parts) != 2:
            raise UserError(f"{where}: merge {k} {m!r} is not 'LEFT RIGHT'")
        merges.append((parts[0], parts[1]))
    pattern = _known_or_single(stages, where)
    tok = _build(tokens, specials, merges, ids_of, pattern, bool(model.get("ignore_merges")), where)
    return tok if normalizer is None else Tokenizer.from_dict({**tok.to_dict(), "normalizer": normalizer})


def _hf_normalizer(norm: dict | None, where: str) -> str | None:
    """A Hugging Face normalizer that is one Unicode normal form (Qwen2: NFC), or None; others refused."""
    if norm is None:
        return None
    if norm.get("type") == "Sequence" and len(norm.get("normalizers", [])) <= 1:
        return _hf_normalizer((norm.get("normalizers") or [None])[0], where)
    if norm.get("type") in NORMAL_FORMS:
        return norm["type"]
    raise UserError(
        f"{where}: normalizer {norm.get('type')!r} is not supported (ownlm reads NFC, NFD, NFKC, NFKD)"
    )


def _known_or_single(stages: list[str], where: str):
    """Our pattern for HF stages: a known sequence's fused regex, one regex that matches every character,
    or the stages."""
    from ownlm.tokenizer.bpe import resolve_pattern

    for name, known in STAGES.items():
        if known == stages:
            return pretokenizer(name)
    if len(stages) == 1:
        try:
            return resolve_pattern(stages[0])
        except UserError:
            pass
    if not stages:
        raise UserError(f"{where}: no pre-tokenizer; ownlm needs at least one split")
    return stages


def _token_name(v) -> str | None:
    return v.get("content") if isinstance(v, dict) else v


def special_ids_from_hf(folder: str | os.PathLike, tokenizer: Tokenizer) -> SpecialIds:
    """bos/eos/unk/pad ids named by ``tokenizer_config.json`` (and ``config.json``'s ids as a fallback)."""
    from ownlm.io import read_json

    folder = Path(folder)
    cfg = (
        read_json(folder / "tokenizer_config.json", what="tokenizer_config.json")
        if (folder / "tokenizer_config.json").is_file()
        else {}
    )
    model_cfg = (
        read_json(folder / "config.json", what="config.json") if (folder / "config.json").is_file() else {}
    )

    def id_of(key):
        name = _token_name(cfg.get(f"{key}_token"))
        if name is not None:
            if name in tokenizer.special_tokens:
                return tokenizer.special_tokens[name]
            if name.encode() in tokenizer.bytes_to_id:
                return tokenizer.bytes_to_id[name.encode()]
        v = model_cfg.get(f"{key}_token_id")
        return v[0] if isinstance(v, list) and v else v if isinstance(v, int) else None

    eos = id_of("eos")
    eot = next((tokenizer.special_tokens[s] for s in END_OF_TURN if s in tokenizer.special_tokens), None)
    return SpecialIds(
        bos=id_of("bos"),
        eos=eos,
        unk=id_of("unk"),
        pad=id_of("pad"),
        eot=eot if eot is not None else eos,
        add_bos=bool(cfg.get("add_bos_token", False)),
        add_eos=bool(cfg.get("add_eos_token", False)),
    )


# ---------------------------------------------------------------------------------------------- chat templates


def _name(tokenizer: Tokenizer, i: int | None) -> str | None:
    if i is None:
        return None
    if i in tokenizer.special_ids:
        return tokenizer.special_ids[i]
    return tokenizer.vocab[i].decode("utf-8", "replace") if i in tokenizer.vocab else None


def _jinja(source, tokenizer: Tokenizer, ids: SpecialIds) -> JinjaTemplate | None:
    if not source:
        return None
    return JinjaTemplate(
        source,
        special_tokens=sorted(tokenizer.special_tokens, key=tokenizer.special_tokens.get),
        bos_token=_name(tokenizer, ids.bos),
        eos_token=_name(tokenizer, ids.eos),
        end_marker=_name(tokenizer, ids.eot),
    )


def chat_template_from_gguf(fields: dict, tokenizer: Tokenizer) -> JinjaTemplate | None:
    """The model's own chat template (``tokenizer.chat_template``), or None when the file has none.

    Save it next to the checkpoint with ``ownlm.tokenizer.chat.save_template``; chat, serve, generate --chat
    and finetune sft then use it.
    """
    return _jinja(fields.get("tokenizer.chat_template"), tokenizer, special_ids_from_gguf(fields, tokenizer))


def chat_template_from_hf(folder: str | os.PathLike, tokenizer: Tokenizer) -> JinjaTemplate | None:
    """The chat template of a Hugging Face folder (``chat_template.jinja``, or ``tokenizer_config.json``'s
    ``chat_template``: a string, or a list of named ones of which "default" is taken), or None."""
    from ownlm.io import read_json

    folder = Path(folder)
    source = None
    if (folder / "chat_template.jinja").is_file():
        source = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    elif (folder / "tokenizer_config.json").is_file():
        source = read_json(folder / "tokenizer_config.json", what="tokenizer_config.json").get(
            "chat_template"
        )
        if isinstance(source, list):
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            source = named.get("default")
    return _jinja(source, tokenizer, special_ids_from_hf(folder, tokenizer))


def template_from_jinja(
    source: str | None, tokenizer: Tokenizer, fields: dict | None = None
) -> JinjaTemplate | None:
    """A GGUF model's Jinja ``source`` as a template; ``fields`` (the file's keys) name bos, eos and the end
    of a turn."""
    return _jinja(source, tokenizer, special_ids_from_gguf(fields or {}, tokenizer))


def hf_vocabulary(folder: str | os.PathLike) -> tuple[Tokenizer, JinjaTemplate | None, dict]:
    """``(tokenizer, chat template or None, special ids for config.json)`` of a Hugging Face folder."""
    tokenizer = tokenizer_from_hf(folder)
    ids = special_ids_from_hf(folder, tokenizer)
    return tokenizer, chat_template_from_hf(folder, tokenizer), ids.config()
