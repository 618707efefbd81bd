"""Between tokens and text at inference time: when an output ends (stop tokens, stop strings), printing it as it
comes, and the chat template a checkpoint talks through. ``generate``, ``chat`` and ``serve`` all take their stop
ids and their template from here, so a chat model stops at its end-of-turn token under every command.

>>> stop_ids(tokenizer, template)  # <|endoftext|> and, for a chat model, <|im_end|>  # doctest: +SKIP
[256, 258]
"""

from __future__ import annotations

import codecs
import sys
from collections.abc import Sequence
from pathlib import Path


def stop_ids(tokenizer, template=None) -> list[int]:
    """The tokens that end an output: ``<|endoftext|>`` when the tokenizer has it, and the chat template's
    end-of-turn marker (``<|im_end|>``) when there is a template."""
    ids = {tokenizer.eot_id} if tokenizer.eot_id is not None else set()
    if template is not None:
        ids.update(template.stop_ids(tokenizer))
    return sorted(ids)


def chat_template_for(folder, tokenizer):
    """``(template, None)`` for a checkpoint folder, or ``(None, why chat cannot work)``: the checkpoint's own
    ``chat_template.json``, else ChatML when the tokenizer has ChatML's two special tokens."""
    from ownlm.tokenizer.chat import get_template, load_template

    template = load_template(folder) if folder is not None else None
    if template is not None:
        missing = [t for t in template.special_tokens() if t not in tokenizer.special_tokens]
        if missing:
            return None, (f"the checkpoint's chat template '{template.name}' needs the special tokens "
                          f"{missing}, which its tokenizer lacks")  # fmt: skip
        return template, None
    chatml = get_template("chatml")
    if all(s in tokenizer.special_tokens for s in chatml.special_tokens()):
        return chatml, None
    return None, (f"the checkpoint {Path(folder).name if folder else ''} has no chat_template.json and its "
                  f"tokenizer has no ChatML tokens {' '.join(chatml.special_tokens())}; fine-tune it for chat "
                  "with `ownlm finetune sft`")  # fmt: skip


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to (not including) the first stop string in it."""
    cut = min((i for s in stop_strings if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


class TextStreamer:
    """Prints tokens as text while they come: whole UTF-8 characters only, and holding back a tail that could
    still turn into a stop string (so the stop string itself is never printed)."""

    def __init__(self, tokenizer, stop_strings: Sequence[str] = (), file=None):
        self.tokenizer, self.stops, self.file = tokenizer, [s for s in stop_strings if s], file or sys.stdout
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.printed = "", 0
        self.hold = max((len(s) for s in self.stops), default=1) - 1

    def __call__(self, sample: int, token: int) -> None:
        self.text += self.decoder.decode(self.tokenizer.id_to_bytes(token))
        self._flush(len(self.text) - self.hold)

    def finish(self) -> str:
        self.text += self.decoder.decode(b"", final=True)
        self.text = cut_at_stop(self.text, self.stops)
        self._flush(len(self.text))
        return self.text

    def _flush(self, upto: int) -> None:
        upto = min(upto, len(cut_at_stop(self.text, self.stops)))
        if upto > self.printed:
            self.file.write(self.text[self.printed : upto])
            self.file.flush()
            self.printed = upto
