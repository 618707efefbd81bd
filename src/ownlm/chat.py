"""``ownlm chat``: a conversation with a chat-tuned model in the terminal.

    ownlm chat runs/sft --system "You answer briefly."
    printf 'Hello\\nWhat is a list?\\n' | ownlm chat runs/sft     # one turn per line, each reply printed

The prompt is rendered with the template the model was fine-tuned with (``chat_template.json`` in its
checkpoint), so the model sees exactly the layout it learned. The history is kept within the context window:
when the conversation no longer fits beside the reply's room, the oldest turns are dropped first; the system
prompt always stays. Commands: ``/reset`` forgets the conversation, ``/save FILE`` writes it as chat JSONL
(the format ``ownlm finetune sft`` reads), ``/quit`` ends it.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path

from ownlm.config import opt
from ownlm.errors import UserError
from ownlm.finetune.score import load_scoring_examples
from ownlm.io import prepare_output, write_jsonl
from ownlm.runtime.decode import generate
from ownlm.runtime.device import DTYPE, inference_dtype, inference_layout, pick_device
from ownlm.runtime.sampling import SamplingConfig
from ownlm.runtime.text import TextStreamer, chat_template_for, stop_ids


@dataclass(kw_only=True)
class ChatConfig:
    """Talk to a chat-tuned model."""

    run: str = opt(help="a fine-tuned run or checkpoint folder (with chat_template.json)", positional=True)
    system: str = opt("", help="system prompt, kept at the start of the conversation")
    sampling: SamplingConfig = opt(SamplingConfig(), help="how the reply's tokens are chosen")
    device: str = opt("auto", help="auto, cpu, cuda, cuda:1, mps")
    dtype: DTYPE = opt("auto", help="weights dtype (auto: fp32 on CPU, bf16 or fp16 on GPUs)")
    stream: bool = opt(True, help="print the reply as it is generated")
    replay: str = opt(
        "", help="chat JSON(L) or a persona folder (its val.jsonl): one reply to each conversation's context"
    )
    out: str = opt("", help="with --replay: the JSONL file of replies ({'reply', 'reference', 'messages'})")


class Conversation:
    """Messages so far and how to fit them into the model's context.

    >>> conv = Conversation(template, tok, block_size=128, system="Be brief.")  # doctest: +SKIP
    >>> ids = conv.prompt("Hello", reply_room=32)                                # doctest: +SKIP
    """

    def __init__(self, template, tokenizer, block_size: int, system: str = ""):
        self.template, self.tok, self.block = template, tokenizer, block_size
        self.system = system
        self.turns: list[dict] = []  # user and assistant messages, oldest first
        self.dropped = 0  # turns dropped so far to fit the context
        self.cut = (
            0  # tokens cut from the start of the last prompt (a system prompt too long for the context)
        )

    def messages(self) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def prompt(self, user: str, reply_room: int) -> list[int]:
        """Add the user's turn; return the prompt ids, dropping the oldest turns until ``reply_room`` tokens
        are left for the reply (the system prompt and the new turn always stay)."""
        self.turns.append({"role": "user", "content": user})
        room = max(1, self.block - reply_room)
        while True:
            ids = self.template.encode_prompt(self.tok, self.messages())
            if len(ids) <= room or len(self.turns) <= 1:
                break
            drop = 2 if len(self.turns) >= 3 and self.turns[1]["role"] == "assistant" else 1
            self.turns = self.turns[drop:]
            self.dropped += drop
        self.cut = max(0, len(ids) - room)  # the system prompt and the new turn alone do not fit: say so
        if self.cut:  # keep the end (the new turn)
            ids = ids[-room:]
        return ids

    def reply(self, text: str) -> None:
        self.turns.append({"role": "assistant", "content": text})

    def reset(self) -> None:
        self.turns, self.dropped = [], 0

    def save(self, path) -> Path:
        path = Path(path)
        write_jsonl(path, [{"messages": self.messages()}])
        return path


def load_chat_model(run: str, device="cpu", dtype: str = "auto"):
    """(model, tokenizer, template) of a chat-tuned checkpoint; a clear error for a model without a template."""
    # lazy: numpy, regex and the tokenizer load when the command runs, not at `--help`
    from ownlm.model.checkpoint import load_model, resolve_checkpoint

    folder = resolve_checkpoint(run)
    device = pick_device(str(device))
    model, tok, _ = load_model(folder, device=device, dtype=inference_dtype(dtype, device))
    if tok is None:
        raise UserError(f"{folder}: the checkpoint has no tokenizer.json")
    template, why = chat_template_for(folder, tok)
    if template is None:
        raise UserError(f"{folder}: not a chat model: {why}; or use `ownlm generate` to continue text")
    if device.type == "cpu":
        inference_layout(model)
    return model, tok, template


def sample_replies(model, tok, template, examples: list[dict], sampling: SamplingConfig, seed: int,
                   system: str = "", progress: bool = True) -> list[dict]:  # fmt: skip
    """A sampled reply to the context (every turn but the last) of each example, beside the real last turn;
    example i is sampled with seed ``seed + i``, so a replay repeats."""
    s, block = sampling, model.config.block_size
    room = min(s.max_new(block), block // 2)
    stops, rows = stop_ids(tok, template), []
    for i, ex in enumerate(examples):
        msgs = ex["messages"]
        context = msgs[:-1] if msgs[-1]["role"] == "assistant" else msgs
        head = [{"role": "system", "content": system}] if system and context[0]["role"] != "system" else []
        ids = template.encode_prompt(tok, head + context)[-(block - room) :]  # a long history keeps its end
        out = generate(model, ids, room, **s.knobs(), stop_token_ids=stops, seed=seed + i,
                       vocab_limit=tok.n_vocab)[0]  # fmt: skip
        reference = msgs[-1]["content"] if msgs[-1]["role"] == "assistant" else None
        rows.append({"where": ex.get("where"), "reply": tok.decode(out).strip(), "reference": reference,
                     "messages": context})  # fmt: skip
        if progress:
            print(f"\r{i + 1}/{len(examples)} replies", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return rows


def replay(cfg: ChatConfig, model, tok, template) -> int:
    """``--replay FILE --out replies.jsonl``: ``sample_replies`` for each conversation of FILE."""
    if not cfg.out:
        raise UserError("--replay writes its replies to a file: add --out replies.jsonl")
    prepare_output(cfg.out, kind="ownlm-replies", folder=False, inputs=[cfg.replay])
    examples = load_scoring_examples(cfg.replay, "val")
    seed = cfg.sampling.seed if cfg.sampling.seed is not None else random.randrange(2**31)
    rows = sample_replies(model, tok, template, examples, cfg.sampling, seed, cfg.system)
    write_jsonl(cfg.out, rows)
    print(f"{len(rows):,} replies -> {cfg.out}")
    return 0


def main(cfg: ChatConfig) -> int:
    cfg.sampling.check()
    s = cfg.sampling
    if cfg.out and not cfg.replay:
        raise UserError("--out goes with --replay FILE (the conversations to answer)")
    model, tok, template = load_chat_model(cfg.run, cfg.device, cfg.dtype)
    if cfg.replay:
        return replay(cfg, model, tok, template)
    block = model.config.block_size
    room = min(s.max_new(block), block // 2)  # the reply's room; the rest of the context keeps the history
    conv = Conversation(template, tok, block, cfg.system)
    interactive = sys.stdin.isatty()
    rng = random.Random(s.seed)
    if interactive:
        print(
            f"chatting with {cfg.run} (template {template.name}); /reset, /save FILE, /quit", file=sys.stderr
        )
    stops, replied = stop_ids(tok, template), False
    while True:
        try:
            line = input("you> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and line == "":
            break
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.strip() in ("/quit", "/exit"):
            break
        if line.strip() == "/reset":
            conv.reset()
            print("(conversation reset)", file=sys.stderr)
            continue
        if line.startswith("/save"):
            target = line[len("/save") :].strip()
            if not target:
                print("usage: /save FILE", file=sys.stderr)
                continue
            try:
                print(f"(saved to {conv.save(target)})", file=sys.stderr)
            except (UserError, OSError) as e:  # a bad file name ends nothing: the conversation goes on
                print(f"(not saved: {e})", file=sys.stderr)
            continue
        if not interactive and replied:  # turns read from a pipe: a line between one reply and the next
            print("-" * 40, flush=True)
        replied = True
        before = conv.dropped
        ids = conv.prompt(line, room)
        if conv.dropped > before:
            print(f"(the oldest {conv.dropped - before} turn(s) no longer fit the context and were dropped)",
                  file=sys.stderr)  # fmt: skip
        if conv.cut:
            what = "the system prompt and your message" if cfg.system else "your message"
            print(f"({what} take {len(ids) + conv.cut} tokens, more than the {len(ids)} the context leaves beside "
                  f"a reply: the first {conv.cut} were cut off)", file=sys.stderr)  # fmt: skip
        streamer = TextStreamer(tok) if cfg.stream else None
        if interactive:
            sys.stdout.write("model> ")
        out = generate(model, ids, min(room, block - len(ids)), **s.knobs(), stop_token_ids=stops,
                       seed=rng.randrange(2**31), stream=streamer, vocab_limit=tok.n_vocab)[0]  # fmt: skip
        text = tok.decode(out)
        if streamer is not None:
            streamer.finish()
            sys.stdout.write("\n")
        else:
            print(text)
        sys.stdout.flush()
        conv.reply(text.strip())
    return 0
