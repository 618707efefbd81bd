"""The batched decoding loop behind ``ownlm serve``: many requests share one forward pass per step.

One thread owns the model. Between steps it admits waiting requests (each prompt is read alone, a "prefill",
into a free slot of the cache) and drops finished, cancelled or timed-out ones; then one forward pass feeds
every active sequence its newest token at that sequence's own position (continuous batching, as in Orca, Yu et
al. 2022). So aggregate throughput grows with the number of clients instead of requests queueing.

Sequences live in the rows ("slots") of the one ``KVCache`` that ``GPT.forward`` consumes; active sequences
always fill slots 0..n-1 (a leaving sequence's slot takes the last one's cache), so a decode step is
``model(next_tokens, kv_cache=cache.rows(0, n))`` and each row continues at its own position. The engine itself
only schedules: who joins and leaves, copying a shared prompt's cache rows for ``n`` choices, and sampling each
row with its own settings. Greedy output is the same alone and among others (tested).

>>> engine = Engine(model, tokenizer, max_batch=8).start()  # doctest: +SKIP
>>> engine.generate(tokenizer.encode("Hello"), SamplingParams(max_new_tokens=20, temperature=0)).text  # doctest: +SKIP
>>> engine.close()  # doctest: +SKIP
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ownlm.runtime.sampling import SamplingConfig, apply_repetition_penalty, sample_next
from ownlm.runtime.text import TextStreamer

# torch, the KV cache and model.checkpoint are imported inside the methods that use them (lazy): this module is
# imported by `ownlm serve`'s config module (serve/cli.py), which `ownlm serve --help` reads

FINISH_REASONS = ("stop", "length", "timeout", "cancelled", "error")


@dataclass
class SamplingParams(SamplingConfig):
    """How one sequence is sampled (``SamplingConfig``'s fields and defaults; ``temperature`` 0 is greedy,
    ``max_new_tokens`` None is min(256, half the context)) and when it ends."""

    stop: Sequence[str] = ()  # stop strings: the text is cut before the first one
    stop_ids: Sequence[int] = ()  # stop tokens (end of text, end of turn): not part of the output


@dataclass
class Event:
    """What the loop reports for a sequence: new text (whole characters, never part of a stop string), the new
    token ids, and on the last event why it ended (one of ``FINISH_REASONS``) with the count of tokens made."""

    text: str = ""
    tokens: list[int] = field(default_factory=list)
    finish: str | None = None
    completion_tokens: int = 0
    error: str | None = None


@dataclass
class Result:
    text: str
    tokens: list[int]
    finish: str
    completion_tokens: int


class _Collect:
    """A file-like sink for ``TextStreamer``: the text written since the last ``take``."""

    def __init__(self):
        self.parts: list[str] = []

    def write(self, s: str) -> None:
        self.parts.append(s)

    def flush(self) -> None:
        pass

    def take(self) -> str:
        s, self.parts = "".join(self.parts), []
        return s


class Ticket:
    """One submitted sequence; ``cancel()`` ends it at the next step (a client that went away)."""

    def __init__(self, prompt, params: SamplingParams, max_new: int, emit, deadline, tokenizer, device):
        import torch

        self.prompt, self.params, self.emit, self.deadline = list(prompt), params, emit, deadline
        self.max_new = max_new  # params.max_new_tokens, or its default for this model's context
        seed = params.seed if params.seed is not None else random.randrange(2**63)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.sink = _Collect()
        self.streamer = TextStreamer(tokenizer, params.stop, file=self.sink)
        self.stop_ids = set(params.stop_ids)
        self.longest_stop = max((len(s) for s in params.stop if s), default=0)
        self.tokens: list[int] = []  # emitted tokens
        self.made = 0  # tokens sampled (emitted + a final stop token)
        self.next_token = -1  # sampled, not yet fed to the model
        self.cancelled = False
        self.finished = False

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def length(self) -> int:
        """Positions of this sequence in the cache once its newest sampled token is taken: the prompt and every
        sampled token but the newest (which the next step feeds)."""
        return len(self.prompt) + max(self.made - 1, 0)


class Engine:
    """Owns ``model`` (eval mode, any device) and decodes every submitted sequence in shared steps.

    ``max_batch``: how many sequences decode together (the cache has that many slots); more wait their turn.
    ``vocab_limit``: ids at or above it (padding rows of the embedding) are never sampled; default: the
    tokenizer's size.
    """

    def __init__(self, model, tokenizer, max_batch: int = 8, vocab_limit: int | None = None):
        from ownlm.model.checkpoint import unwrap
        from ownlm.runtime.kv_cache import KVCache

        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model = unwrap(model).eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.vocab_limit = tokenizer.n_vocab if vocab_limit is None else vocab_limit
        self.block_size = self.model.config.block_size
        self.device = self.model.transformer.wte.weight.device
        self.cache = KVCache.for_model(self.model, batch_size=max_batch)  # slot i holds active[i]
        self.active: list[Ticket] = []  # active[i] lives in cache slot i
        self.waiting: collections.deque[Ticket] = collections.deque()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.steps = 0  # decode steps taken
        self.peak_batch = 0  # the most sequences decoded in one step
        self.prefills_shared = 0  # prompts not read again: the same prompt was just read for another choice
        self.finished: collections.Counter[str] = collections.Counter()  # finish reason -> sequences

    # ------------------------------------------------------------------------------------------ public

    def start(self) -> Engine:
        if self.thread is None:
            self.stopping = False
            self.thread = threading.Thread(target=self._loop, name="ownlm-engine", daemon=True)
            self.thread.start()
        return self

    def close(self) -> None:
        """Stop the loop; sequences still running or waiting end as ``cancelled``."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        for t in [*self.active, *self.waiting]:
            self._finish(t, "cancelled")
        self.active.clear()
        self.waiting.clear()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(self, prompt: Sequence[int], params: SamplingParams, emit: Callable[[Event], None],
               timeout_s: float | None = None) -> Ticket:  # fmt: skip
        """Queue a sequence; ``emit(event)`` is called from the loop's thread as tokens come (it must be quick
        and must not raise). ``timeout_s`` counts from now, waiting included."""
        if not 0 < len(prompt) <= self.block_size:
            raise ValueError(f"prompt of {len(prompt)} tokens: need 1 to {self.block_size} (the context)")
        max_new = params.max_new(self.block_size)
        if max_new < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new}")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        ticket = Ticket(prompt, params, max_new, emit, deadline, self.tokenizer, self.device)
        with self.cond:
            if self.stopping or self.thread is None:
                raise RuntimeError("the engine is not running (call start())")
            self.waiting.append(ticket)
            self.cond.notify()
        return ticket

    def generate(
        self, prompt: Sequence[int], params: SamplingParams, timeout_s: float | None = None
    ) -> Result:
        """Submit and wait: the whole text, tokens and finish reason."""
        done = threading.Event()
        parts: list[Event] = []

        def emit(ev: Event) -> None:
            parts.append(ev)
            if ev.finish is not None:
                done.set()

        self.submit(prompt, params, emit, timeout_s)
        done.wait()
        last = parts[-1]
        return Result("".join(e.text for e in parts), [t for e in parts for t in e.tokens], last.finish,
                      last.completion_tokens)  # fmt: skip

    # ------------------------------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self.cond:
                    while not self.stopping and not self.waiting and not self.active:
                        self.cond.wait()
                    if self.stopping:
                        return
                    self._expire_waiting()
                    new = []
                    while self.waiting and len(self.active) + len(new) < self.max_batch:
                        new.append(self.waiting.popleft())
                try:
                    self._step(new)
                except Exception as e:  # a broken step fails the sequences in it; the server keeps going
                    for t in [*self.active, *new]:
                        if not t.finished:
                            self._finish(t, "error", error=f"{type(e).__name__}: {e}")
                    self.active.clear()

    def _expire_waiting(self) -> None:
        now = time.monotonic()
        keep = collections.deque()
        for t in self.waiting:
            if t.cancelled:
                self._finish(t, "cancelled")
            elif t.deadline is not None and now > t.deadline:
                self._finish(t, "timeout")
            else:
                keep.append(t)
        self.waiting = keep

    def _step(self, new: list[Ticket]) -> None:
        import torch

        now = time.monotonic()
        for t in list(self.active):
            if t.cancelled:
                self._leave(t, "cancelled")
            elif t.deadline is not None and now > t.deadline:
                self._leave(t, "timeout")
        read: dict[tuple, tuple] = {}  # prompt -> (its ticket, logits): `n` choices read their prompt once
        for t in new:  # prefill: read the prompt alone into the next free slot, sample its first token
            slot = len(self.active)
            self.active.append(t)
            twin, logits = read.get(tuple(t.prompt), (None, None))
            if twin in self.active:  # the same prompt was just read into a slot still held: copy its cache
                self.cache.copy(self.active.index(twin), slot, len(t.prompt))
                self.prefills_shared += 1
            else:
                self.cache.reset(slot)
                idx = torch.tensor([t.prompt], device=self.device)  # (1, T)
                logits = self._forward(idx, self.cache.rows(slot, 1))
                read[tuple(t.prompt)] = (t, logits)
            self._accept(t, self._sample(logits.clone(), [t])[0])
        if not self.active:
            return
        batch = list(self.active)
        n = len(batch)
        idx = torch.tensor([[t.next_token] for t in batch], device=self.device)  # (n, 1)
        logits = self._forward(idx, self.cache.rows(0, n))  # (n, V): each row at its own position
        self.steps += 1
        self.peak_batch = max(self.peak_batch, n)
        for t, token in zip(batch, self._sample(logits, batch)):
            self._accept(t, token)

    def _accept(self, t: Ticket, token: int) -> None:
        """Take the sampled ``token`` for ``t``: emit its text, or end the sequence."""
        t.made += 1
        if token in t.stop_ids:
            self._leave(t, "stop")
            return
        t.tokens.append(token)
        before = len(t.streamer.text)
        t.streamer(0, token)
        # a stop string completed by this token ends within its text: look at that text and just before it
        window = t.streamer.text[max(0, before - t.longest_stop) :]
        if t.longest_stop and any(s and s in window for s in t.params.stop):
            self._leave(t, "stop", tokens=[token])
        elif t.made >= t.max_new or t.length >= self.block_size:
            self._leave(t, "length", tokens=[token])
        else:
            t.next_token = token
            self._emit(t, Event(text=t.sink.take(), tokens=[token]))

    def _leave(self, t: Ticket, reason: str, tokens: list[int] | None = None) -> None:
        """End an active sequence; the last slot's sequence moves into its slot so slots stay 0..n-1."""
        i = self.active.index(t)
        last = self.active[-1]
        if last is not t:
            self.cache.copy(len(self.active) - 1, i)  # all its positions, the newest step's included
            self.active[i] = last
        self.active.pop()
        self._finish(t, reason, tokens=tokens)

    def _finish(
        self, t: Ticket, reason: str, tokens: list[int] | None = None, error: str | None = None
    ) -> None:
        if t.finished:
            return
        t.finished = True
        self.finished[reason] += 1
        text = t.sink.take()
        if reason in ("stop", "length", "timeout"):  # the rest of the text (held back for stop strings)
            t.streamer.finish()
            text += t.sink.take()
        self._emit(
            t, Event(text=text, tokens=tokens or [], finish=reason, completion_tokens=t.made, error=error)
        )

    @staticmethod
    def _emit(t: Ticket, event: Event) -> None:
        try:
            t.emit(event)
        except Exception:  # the listener is gone (e.g. its event loop closed): nobody wants the rest
            t.cancelled = True

    # ------------------------------------------------------------------------------------------ model

    def _sample(self, logits, batch: list[Ticket]) -> list[int]:
        """One token per row of ``logits`` (n, V), each row with its own sequence's settings and generator."""
        import torch

        logits = logits.float()
        if self.vocab_limit < logits.size(-1):
            logits[:, self.vocab_limit :] = float("-inf")
        greedy = logits.argmax(dim=-1).tolist()
        out = []
        for i, t in enumerate(batch):
            p = t.params
            if p.repetition_penalty == 1.0 and p.temperature <= 0:
                out.append(greedy[i])
                continue
            row = logits[i : i + 1]  # (1, V)
            if p.repetition_penalty != 1.0:
                context = torch.tensor([t.prompt + t.tokens], device=logits.device)  # (1, L)
                apply_repetition_penalty(row, context, p.repetition_penalty)
            out.append(int(sample_next(row, p.temperature, p.top_k or None, p.top_p, t.generator)[0, 0]))
        return out

    def _forward(self, idx, cache):
        """The model's logits at the last position of each row: ``idx`` (B, T) continues the B rows of
        ``cache`` (a view of some slots). Returns (B, V)."""
        return self.model(idx, kv_cache=cache, last_only=True)[0][:, -1, :]
