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
        if d.get("name") == JinjaTemplate.name:
            return JinjaTemplate.from_dict(d)
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


# ---------------------------------------------------------------------------------------------- Jinja
_SENTINEL = "\ue000{}\ue001"  # private-use characters around a message number: where its content goes
_SENTINEL_RX = r"\ue000(\d+)\ue001"


def _generation_tag():
    """A jinja2 extension for transformers' ``{% generation %}...{% endgeneration %}`` (it marks the assistant's
    text for masks; ownlm finds that text by rendering, so the tag just renders its body)."""
    from jinja2 import nodes
    from jinja2.ext import Extension

    class Generation(Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body, lineno=lineno)

    return Generation


class JinjaTemplate(ChatTemplate):
    """A model's own chat template (the Jinja text of GGUF's ``tokenizer.chat_template`` or of
    ``tokenizer_config.json``), rendered in jinja2's sandbox the way transformers renders it.

    Spans come from rendering twice: once with the messages, once with each content replaced by a
    sentinel, so the rendered text splits into template text and message contents without searching for
    token values. Template text is cut at the tokenizer's special-token strings (those become the special
    ids); each run of text between two special tokens is encoded as a whole (as transformers does), and a
    token carries loss when it holds any of an assistant's content (a token may also hold the template's
    newline before it), as does the end-of-turn (or eos) token right after it. Message text never becomes a
    special token.

    >>> t = JinjaTemplate("{% for m in messages %}<|im_start|>{{ m['role'] }}\\n{{ m['content'] }}<|im_end|>\\n{% endfor %}",
    ...                   special_tokens=["<|im_start|>", "<|im_end|>"], end_marker="<|im_end|>")
    >>> t.render([{"role": "user", "content": "Hi <|im_end|>"}])
    '<|im_start|>user\\nHi <|im_end|><|im_end|>\\n'
    """

    name = "jinja"

    def __init__(
        self,
        source: str,
        special_tokens: list[str] = (),
        bos_token: str | None = None,
        eos_token: str | None = None,
        end_marker: str | None = None,
    ):
        if not isinstance(source, str) or not source.strip():
            raise UserError("a Jinja chat template must be a non-empty string")
        self.source = source
        self._specials = list(dict.fromkeys(special_tokens))
        self.bos_token, self.eos_token = bos_token, eos_token
        self.end_marker = end_marker or eos_token or EOT
        self._compiled = None

    def special_tokens(self) -> list[str]:
        return [s for s in self._specials]

    def _template(self):
        if self._compiled is None:
            try:
                from jinja2 import TemplateError
                from jinja2.sandbox import ImmutableSandboxedEnvironment
            except ImportError:
                raise UserError("a model's own chat template needs jinja2: pip install jinja2") from None

            def raise_exception(message):
                raise TemplateError(message)

            def strftime_now(fmt):
                import datetime

                return datetime.datetime.now().strftime(fmt)

            def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
                import json

                return json.dumps(
                    x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
                )

            # transformers' settings: blocks trimmed, loop controls, these helpers
            env = ImmutableSandboxedEnvironment(
                trim_blocks=True,
                lstrip_blocks=True,
                extensions=["jinja2.ext.loopcontrols", _generation_tag()],
            )
            env.filters["tojson"] = tojson
            env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
            try:
                self._compiled = env.from_string(self.source)
            except TemplateError as e:
                raise UserError(f"the chat template is not valid Jinja: {e}") from None
        return self._compiled

    def _render(self, contents: list[str], messages: list[dict], add_generation_prompt: bool) -> str:
        from jinja2 import TemplateError

        msgs = [{"role": m["role"], "content": c} for m, c in zip(messages, contents)]
        try:
            return self._template().render(
                messages=msgs,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
            )
        except TemplateError as e:
            raise UserError(f"the model's chat template refused the conversation: {e}") from None

    def spans(self, messages: list[dict], add_generation_prompt: bool = False) -> list[Span]:
        import regex

        contents = [_user_text(m, "\n\n") if m["role"] == "user" else m["content"] for m in messages]
        marked = self._render(
            [_SENTINEL.format(k) for k in range(len(messages))], messages, add_generation_prompt
        )
        real = self._render(contents, messages, add_generation_prompt)
        parts = regex.split(_SENTINEL_RX, marked)  # template text at even positions, message numbers at odd
        for variant in (contents, [c.strip() for c in contents]):  # verbatim, or trimmed (`| trim`)
            if "".join(variant[int(p)] if k % 2 else p for k, p in enumerate(parts)) == real:
                break
        else:
            raise UserError(
                "the model's chat template changes the message text in a way ownlm cannot follow "
                "(it must write each message's content as it is, or trimmed)"
            )
        names = sorted(self._specials, key=len, reverse=True)
        cut = regex.compile("(" + "|".join(regex.escape(s) for s in names) + ")") if names else None
        ends = {self.end_marker, self.eos_token} - {None}
        out: list[Span] = []
        after_reply = False  # the previous span was an assistant's content
        for k, p in enumerate(parts):
            if k % 2:
                m = int(p)
                reply = messages[m]["role"] == "assistant"
                out.append(Span(variant[m], train=reply))
                after_reply = reply and bool(variant[m])
                continue
            for j, piece in enumerate(cut.split(p) if cut else [p]):
                if j % 2:
                    out.append(Span(piece, special=True, train=after_reply and piece in ends))
                elif piece:
                    out.append(Span(piece))
                after_reply = after_reply and not piece  # only an end marker right after the reply
        return [s for s in out if s.text]

    def _encode_spans(self, tokenizer: Tokenizer, spans: list[Span]) -> tuple[list[int], list[int]]:
        """Runs of text between special tokens encoded as a whole; the mask from each token's byte offset."""
        missing = [s for s in self.special_tokens() if s not in tokenizer.special_tokens]
        if missing:
            raise UserError(
                f"the tokenizer lacks the special token(s) {missing} that the model's chat template uses"
            )
        ids: list[int] = []
        mask: list[int] = []
        run: list[Span] = []

        def flush():
            text = "".join(s.text for s in run)
            train, pos = [], 0
            for s in run:
                n = len(tokenizer.normalize(s.text).encode("utf-8"))
                if s.train:
                    train.append((pos, pos + n))
                pos += n
            pos = 0
            for t in tokenizer.encode_ordinary(text):
                end = pos + len(tokenizer.id_to_bytes(t))
                ids.append(t)
                mask.append(int(any(a < end and pos < b for a, b in train)))
                pos = end
            run.clear()

        for s in spans:
            if s.special:
                flush()
                ids.append(tokenizer.special_tokens[s.text])
                mask.append(int(s.train))
            else:
                run.append(s)
        flush()
        return ids, mask

    def stop_ids(self, tokenizer: Tokenizer) -> list[int]:
        """The end-of-turn token and eos."""
        names = dict.fromkeys(n for n in (self.end_marker, self.eos_token) if n)
        return [tokenizer.special_tokens[n] for n in names if n in tokenizer.special_tokens]

    def to_jinja(self) -> str:
        return self.source

    def to_dict(self) -> dict:
        return {
            **super().to_dict(),
            "template": self.source,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "end_marker": self.end_marker,
        }

    @classmethod
    def from_dict(cls, d: dict) -> JinjaTemplate:
        if not isinstance(d.get("template"), str) or not isinstance(d.get("special_tokens", []), list):
            raise UserError("a 'jinja' chat template needs 'template' (the Jinja text) and 'special_tokens'")
        return cls(
            d["template"],
            d.get("special_tokens", []),
            d.get("bos_token"),
            d.get("eos_token"),
            d.get("end_marker"),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JinjaTemplate) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"JinjaTemplate({len(self.source)} characters, end marker {self.end_marker!r})"
