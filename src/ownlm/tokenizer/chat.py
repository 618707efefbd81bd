"""Chat templates: a conversation -> token ids + a loss mask, a prompt for generation, or text.

A conversation is a list of messages ``{"role": "system" | "user" | "assistant", "content": str}``; a user
message may carry ``"input"`` too (the Alpaca field). A template lays the messages out as a list of *spans*
(``Span``): fixed template text, special-token markers, and the messages' own text. Everything else is
derived from those spans in one place, so the ids, the mask, the text and the prompt cannot disagree:

- ``encode``: each span encoded on its own and the pieces concatenated. Message text is always encoded as
  ordinary text, so a user who writes ``<|im_end|>`` gets byte tokens, never the marker: text cannot inject a
  special token. The mask is 1 exactly on the assistant's content and its end marker (what the model learns
  to say), 0 on everything it only reads.
- ``encode_prompt``: the same spans up to and including the assistant header, for the model to continue.
  Because spans are encoded separately, the prompt is a prefix of the training encoding.
- ``render``: the spans' text joined; ``to_jinja``: a Hugging Face ``chat_template`` giving the same text.

Two templates: ``chatml`` (``<|im_start|>role\\n...<|im_end|>\\n``, needs two new special tokens) and
``alpaca`` (the instruction/response prompt of "Build a Large Language Model (From Scratch)", ending each
response with ``<|endoftext|>``).

>>> from ownlm.tokenizer.bpe import Tokenizer
>>> tok = add_special_tokens(Tokenizer(special_tokens={"<|endoftext|>": 256}), ["<|im_start|>", "<|im_end|>"])
>>> msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
>>> get_template("chatml").render(msgs)
'<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nYo<|im_end|>\\n'
>>> ids, mask = get_template("chatml").encode(tok, msgs)
>>> tok.decode([i for i, m in zip(ids, mask) if m])
'Yo<|im_end|>'
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ownlm.errors import UserError
from ownlm.tokenizer.bpe import EOT, Tokenizer

FORMAT = "ownlm-chat-template"
VERSION = 1
FILENAME = "chat_template.json"
ROLES = ("system", "user", "assistant")
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


@dataclass(frozen=True)
class Span:
    """A piece of a laid-out conversation: ``text``, whether it is one special token, whether it carries loss."""

    text: str
    special: bool = False
    train: bool = False


def check_messages(messages) -> list[dict]:
    """Check a conversation's shape; return it. A ``UserError`` says what is wrong (the caller adds file:line).

    >>> check_messages([{"role": "bot", "content": "hi"}])
    Traceback (most recent call last):
    ownlm.errors.UserError: message 1: unknown role 'bot' (expected system, user or assistant)
    """
    if not isinstance(messages, list) or not messages:
        raise UserError("'messages' must be a non-empty list of {role, content} objects")
    for k, m in enumerate(messages, 1):
        if not isinstance(m, dict):
            raise UserError(f"message {k}: expected an object {{role, content}}, found {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise UserError(f"message {k}: unknown role {role!r} (expected system, user or assistant)")
        if not isinstance(content, str):
            what = "missing" if content is None else f"a {type(content).__name__}, not a string"
            raise UserError(f"message {k} ({role}): 'content' is {what}")
        if role == "assistant" and not content.strip():
            raise UserError(f"message {k}: empty assistant response")
        if m.get("input") is not None:
            if role != "user":
                raise UserError(f"message {k} ({role}): only a user message may have an 'input'")
            if not isinstance(m["input"], str):
                raise UserError(f"message {k}: 'input' must be a string, found {type(m['input']).__name__}")
    return messages


def _user_text(m: dict, sep: str) -> str:
    """A user message's content, with its Alpaca ``input`` after ``sep`` when there is one."""
    return m["content"] + (sep + m["input"] if m.get("input") else "")


class ChatTemplate:
    """Base class: a template says how messages become spans; encode/render/prompt are derived here."""

    name: str = ""
    end_marker: str = EOT  # the special token that ends an assistant turn

    def special_tokens(self) -> list[str]:
        """The special tokens this template needs in the tokenizer."""
        return [EOT]

    def spans(self, messages: list[dict], add_generation_prompt: bool = False) -> list[Span]:
        raise NotImplementedError

    def to_jinja(self) -> str:
        raise NotImplementedError

    # ---------------------------------------------------------------- derived from spans
    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The conversation as text, markers written out (for humans, docs and export)."""
        return "".join(s.text for s in self.spans(check_messages(messages), add_generation_prompt))

    def _encode_spans(self, tokenizer: Tokenizer, spans: list[Span]) -> tuple[list[int], list[int]]:
        missing = [s for s in self.special_tokens() if s not in tokenizer.special_tokens]
        if missing:
            raise UserError(
                f"the tokenizer lacks the special token(s) {missing} that the {self.name!r} template needs; "
                "add them with ownlm.tokenizer.chat.add_special_tokens"
            )
        ids: list[int] = []
        mask: list[int] = []
        for s in spans:
            # Message text goes through encode_ordinary: a special token's string in it stays plain text.
            piece = [tokenizer.special_tokens[s.text]] if s.special else tokenizer.encode_ordinary(s.text)
            ids += piece
            mask += [int(s.train)] * len(piece)
        return ids, mask

    def encode(self, tokenizer: Tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
        """A training conversation -> ``(ids, loss_mask)``; the mask is 1 on assistant content + end markers."""
        check_messages(messages)
        if not any(m["role"] == "assistant" for m in messages):
            raise UserError("the conversation has no assistant message to learn from")
        return self._encode_spans(tokenizer, self.spans(messages))

    def encode_prompt(self, tokenizer: Tokenizer, messages: list[dict]) -> list[int]:
        """The conversation so far + the assistant header: what the model continues when it replies."""
        return self._encode_spans(tokenizer, self.spans(check_messages(messages), True))[0]

    def stop_ids(self, tokenizer: Tokenizer) -> list[int]:
        """Ids that end an assistant reply: the end marker, and ``<|endoftext|>`` when the tokenizer has it."""
        names = dict.fromkeys([self.end_marker, EOT])
        return [tokenizer.special_tokens[n] for n in names if n in tokenizer.special_tokens]

    # ---------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "special_tokens": self.special_tokens(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> ChatTemplate:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            found = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise UserError(f"expected an '{FORMAT}' chat template, found format {found!r}")
        v = d.get("version")
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= VERSION:
            raise UserError(f"chat template version {v!r} is not one this ownlm understands (<= {VERSION})")
        return get_template(d.get("name"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChatTemplate) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ChatML(ChatTemplate):
    """``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message (OpenAI's ChatML, used by many open models).

    A user message's ``input`` follows its content after a blank line.
    """

    name = "chatml"
    end_marker = IM_END

    def special_tokens(self) -> list[str]:
        return [IM_START, IM_END]

    def spans(self, messages: list[dict], add_generation_prompt: bool = False) -> list[Span]:
        out: list[Span] = []
        for m in messages:
            reply = m["role"] == "assistant"
            content = _user_text(m, "\n\n") if m["role"] == "user" else m["content"]
            out += [Span(IM_START, special=True), Span(m["role"] + "\n"), Span(content, train=reply)]
            out += [Span(IM_END, special=True, train=reply), Span("\n")]
        if add_generation_prompt:
            out += [Span(IM_START, special=True), Span("assistant\n")]
        return [s for s in out if s.text]

    def to_jinja(self) -> str:
        return (
            "{% for message in messages %}"
            "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] }}"
            "{% if message['role'] == 'user' and message.get('input') %}{{ '\\n\\n' + message['input'] }}{% endif %}"
            "{{ '<|im_end|>\\n' }}"
            "{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
        )


ALPACA_PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


class Alpaca(ChatTemplate):
    """The Alpaca prompt: a preamble, then ``### Instruction:`` / ``### Input:`` / ``### Response:`` sections.

    Rules beyond the single-turn original: a first ``system`` message replaces the preamble (a system message
    anywhere else is an error); every message is its own section in order, so a multi-turn conversation reads
    preamble, instruction, response<|endoftext|>, instruction, response<|endoftext|>, ... Each response ends
    with ``<|endoftext|>``, which the model learns to say and generation stops at.
    """

    name = "alpaca"

    def spans(self, messages: list[dict], add_generation_prompt: bool = False) -> list[Span]:
        if any(m["role"] == "system" for m in messages[1:]):
            raise UserError("the alpaca template takes a system message only as the first message")
        first = messages[0]
        out = [Span(first["content"]) if first["role"] == "system" else Span(ALPACA_PREAMBLE)]
        for m in messages[1:] if first["role"] == "system" else messages:
            if m["role"] == "user":
                out += [Span("\n\n### Instruction:\n"), Span(m["content"])]
                if m.get("input"):
                    out += [Span("\n\n### Input:\n"), Span(m["input"])]
            else:
                out += [Span("\n\n### Response:\n"), Span(m["content"], train=True)]
                out += [Span(EOT, special=True, train=True)]
        if add_generation_prompt:
            out.append(Span("\n\n### Response:\n"))
        return [s for s in out if s.text]

    def to_jinja(self) -> str:
        return (
            "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
            "{% set rest = messages[1:] %}"
            "{% else %}{{ '" + ALPACA_PREAMBLE + "' }}{% set rest = messages %}{% endif %}"
            "{% for message in rest %}"
            "{% if message['role'] == 'user' %}{{ '\\n\\n### Instruction:\\n' + message['content'] }}"
            "{% if message.get('input') %}{{ '\\n\\n### Input:\\n' + message['input'] }}{% endif %}"
            "{% else %}{{ '\\n\\n### Response:\\n' + message['content'] + '<|endoftext|>' }}{% endif %}"
            "{% endfor %}"
            "{% if add_generation_prompt %}{{ '\\n\\n### Response:\\n' }}{% endif %}"
        )


TEMPLATES: dict[str, ChatTemplate] = {"chatml": ChatML(), "alpaca": Alpaca()}


def get_template(name: str) -> ChatTemplate:
    """The template called ``name``.

    >>> get_template("chatml").special_tokens()
    ['<|im_start|>', '<|im_end|>']
    """
    if name not in TEMPLATES:
        raise UserError(f"unknown chat template {name!r} (known: {', '.join(TEMPLATES)})")
    return TEMPLATES[name]


def save_template(directory: str | os.PathLike, template: ChatTemplate) -> Path:
    """Write ``directory/chat_template.json`` atomically; return its path."""
    from ownlm.io import write_json

    path = Path(directory) / FILENAME
    write_json(path, template.to_dict())
    return path


def load_template(directory: str | os.PathLike) -> ChatTemplate | None:
    """The template saved in ``directory``, or ``None`` when it has no ``chat_template.json``."""
    from ownlm.io import read_json

    path = Path(directory) / FILENAME
    if not path.exists():
        return None
    try:
        return ChatTemplate.from_dict(read_json(path, what="chat template file"))
    except UserError as e:
        msg = str(e)
        raise UserError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def add_special_tokens(tokenizer: Tokenizer, names: list[str]) -> Tokenizer:
    """A new tokenizer with the missing ``names`` added at ids ``n_vocab``, ``n_vocab + 1``, ...

    Existing tokens, merges and pattern are untouched, so every old encoding stays the same.

    >>> add_special_tokens(Tokenizer(), ["<|im_start|>"]).special_tokens
    {'<|im_start|>': 256}
    """
    specials = dict(tokenizer.special_tokens)
    for name in dict.fromkeys(names):
        if name not in specials:
            specials[name] = max([tokenizer.n_vocab - 1, *specials.values()]) + 1
    return tokenizer.with_special_tokens(specials)
