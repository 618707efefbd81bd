"""``ownlm build`` and ``ownlm demo``: every stage chained, skipping what is already up to date.

    ownlm build ~/notes ~/chats/whatsapp.zip --out runs/mine     # your files -> a model you trained
    ownlm demo                                                   # the same on Python's own documentation

The stages run in this order, each through its ``ownlm`` command's config and entry function (the same code
as running it by hand), each writing into a folder of ``--out``::

    extract     SOURCES (raw files, folders, zips)      -> docs.jsonl        (documents JSONL sources skip it)
    corpus      docs.jsonl                              -> corpus/
    tokenizer   corpus/                                 -> tokenizer/
    compare     corpus/ (optional)                      -> compare/          the vocabulary-size table
    encode      corpus/ + tokenizer/                    -> tokens/
    pretrain    tokens/                                 -> run/              resumed when interrupted
    persona     docs.jsonl (with --person)              -> persona/          the person's replies + the others'
    sft-others  run/ + persona/others.jsonl             -> sft-others/       the other senders' replies first
    sft         run/ or sft-others/ + persona/, --sft-data -> sft/           the person's voice, or instructions
    samples     run/                                    -> samples.md
    report                                              -> report.md         always rewritten

A stage is skipped when its *key* — the hash of its resolved config and of its inputs (the upstream stage's
output fingerprint, or the sha256 of every source file) — equals the key recorded in
``OUT/pipeline.json`` when it last finished, and its output is still there unchanged. Change one setting and
only the stages downstream of it run again. A pretraining run that was interrupted (Ctrl-C, kill, power cut)
with the same key resumes from its latest checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ownlm.config import from_dict, opt, to_dict
from ownlm.errors import UserError
from ownlm.finetune.persona import TurnsConfig
from ownlm.model.adapt import AdaptConfig
from ownlm.model.run import RunFolder
from ownlm.runtime.sampling import SamplingConfig
from ownlm.tokenizer.cli import BPEConfig
from ownlm.train.config import ModelShape, PretrainingConfig, TrainingConfig
from ownlm.train.driver import DEFAULT_EPOCHS

STATE_FORMAT, STATE_VERSION = "ownlm-pipeline", 1
TRAINING_STAGES = (
    "pretrain",
    "sft-others",
    "sft",
)  # stages that resume an interrupted run instead of starting over


@dataclass
class BuildConfig:
    """Run the whole pipeline on your files: extract -> corpus -> tokenizer -> encode -> pretrain -> samples."""

    out: str = opt(
        help="output folder for every stage (docs.jsonl, corpus/, tokenizer/, tokens/, run/, report.md)"
    )
    sources: list[str] = opt([], positional=True, help="files, folders, .zip archives, or documents JSONL")
    # Stage settings whose names are the stage's own are nested sections (bpe, turns, adapt, model, train: flat
    # flags, the same as the stage's). The fields below are declared here because their names clash between
    # stages or with a section: --min-chars, --text-field and --val-fraction mean one thing for extract, corpus
    # and persona at once (each stage config has its own field of that name); --redact and --password are
    # extract's (persona redacts too); the sft-* fields are `finetune sft`'s --data, --lr, --epochs, ... which
    # the pretraining `train` section already names.
    # extract
    redact: bool = opt(
        False, help="extract: replace phone numbers, e-mail addresses and URLs with placeholders"
    )
    password: str | None = opt(None, help="extract: password for encrypted PDFs and zip archives")
    text_field: str | None = opt(None, help="extract: the JSON/CSV field holding the text (default: guessed)")
    drop_system: bool = opt(True, help="extract: drop chat system lines (joins, leaves, encryption notices)")
    # corpus
    min_chars: int = opt(1, help="corpus: drop documents shorter than this")
    val_fraction: float = opt(
        0.1,
        help="corpus: share of documents for validation; persona: the latest share of the person's replies",
        bounds="[0, 1)",
    )
    near_dup: bool = opt(True, help="corpus: remove near-duplicate documents")
    bpe: BPEConfig = opt(BPEConfig(), help="tokenizer: vocabulary size and pre-tokenization")
    compare: bool = opt(False, help="also write the tokenizer comparison table (characters vs words vs BPE)")
    compare_sizes: list[int] = opt([256, 1024, 4096, 16384], help="compare: BPE vocabulary sizes")
    # samples
    prompts: list[str] = opt([], help="prompts for the final samples (default: 3 samples from scratch)")
    sample_tokens: int = opt(120, help="tokens per final sample", bounds="[1, inf)")
    # not a nested SamplingConfig: its --seed and --max-new-tokens would clash with the training seed and
    # --sample-tokens; the default is the one sampling table's
    temperature: float = opt(
        SamplingConfig.temperature, help="sampling temperature for the final samples", bounds="[0, 100]"
    )
    force: bool = opt(False, help="run every stage even if it is up to date")
    # fine-tuning after pretraining
    person: list[str] = opt(
        [],
        help="persona: the chat sender to imitate (more names: aliases); adds the persona and chat fine-tuning stages",
    )
    sft_data: list[str] = opt(
        [], help="instruction or chat data to fine-tune on after pretraining (adds that stage)"
    )
    sft_val_data: list[str] = opt(
        [], help="held-out examples for that fine-tuning (default: 10% of --sft-data)"
    )
    sft_minutes: float = opt(3.0, help="fine-tuning time budget in minutes")
    sft_epochs: float = opt(
        3.0,
        help="passes over the fine-tuning examples at most, within --sft-minutes (0: the time budget alone)",
    )
    sft_lr: float = opt(5e-4, help="fine-tuning peak learning rate")
    others_first: bool = opt(
        True,
        help="with --person: fine-tune on the other senders' replies first (half the time, one pass at most), "
        "then on the person's; in our measurement this beats the person's replies alone",
    )
    adapt: AdaptConfig = opt(
        AdaptConfig(lora_rank=-1, base_dtype="bf16"),
        help="fine-tuning: LoRA adapters (-1: rank 8 with --base, else none) or partial; --base-dtype applies "
        "with --base and LoRA",
    )
    base: str | None = opt(
        None,
        help="fine-tune this model (an `ownlm import` folder or any ownlm run) instead of training one: no "
        "tokenizer training and no pretraining (needs --person or --sft-data)",
    )
    # persona examples (with --person): the same flags as `ownlm persona`; --val-fraction holds out its latest part
    turns: TurnsConfig = opt(TurnsConfig(), help="persona: how messages become turns, sessions and context")
    patience: int = opt(
        0, help="fine-tuning: stop when the held-out loss has not improved for N evaluations (0: never)"
    )
    export_gguf: bool = opt(
        True, help="persona: end with export/model.gguf (llama.cpp) and an Ollama Modelfile beside it"
    )
    score_replies: int = opt(
        40,
        help="persona: held-out contexts each model answers for the 'sounds like them' score (0: no score stage)",
    )
    score_minutes: float = opt(
        0.0,
        help="persona: wall-time budget of that score stage (0: half of --sft-minutes); its sampling stops there "
        "and the report says how many contexts were answered",
        bounds="[0, inf)",
    )
    # model and pretraining: the same sections as `ownlm pretrain`
    model: ModelShape = opt(ModelShape(), help="the model's size and block")
    train: PretrainingConfig = opt(
        PretrainingConfig(max_minutes=10.0, batch_size=32), help="pretraining budget, schedule, machine"
    )


@dataclass
class DemoConfig:
    """The whole pipeline on the embedded corpus (Python's own documentation): about 5 minutes on a laptop CPU."""

    out: str = opt("runs/demo", help="output folder (report.md, samples, model, tokenizer, ...)")
    minutes: float = opt(
        3.5, help="pretraining time budget in minutes; the other stages take well under a minute more"
    )
    sft_minutes: float = opt(1.5, help="time budget of the instruction fine-tuning that follows, in minutes")
    vocab_size: int = opt(2048, help="tokenizer vocabulary size")
    compare: bool = opt(True, help="write the tokenizer comparison table")
    force: bool = opt(False, help="run every stage even if it is up to date")


# ----------------------------------------------------------------------------- stages and fingerprints


def stage(*words: str):
    """(ConfigClass, entry function) of an ``ownlm`` command, looked up in the CLI table."""
    import importlib

    from ownlm.cli import find_command

    cmd, rest = find_command(list(words))
    assert cmd is not None and not rest, words
    load = lambda ref: getattr(importlib.import_module(ref.split(":")[0]), ref.split(":")[1])  # noqa: E731
    return load(cmd.config), load(cmd.entry)


def _sha(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# settings of how a stage runs on this machine, not of what it makes: changing one neither re-runs a finished stage
# nor restarts an interrupted one (a build stopped in lean memory mode resumes in fast)
MACHINE_ONLY = frozenset({"threads", "progress", "log_seconds", "memory_mode"})


def _made_by(values: dict) -> dict:
    """A stage's config without its ``MACHINE_ONLY`` settings (in every section): what its key is made of."""
    return {k: _made_by(v) if isinstance(v, dict) else v for k, v in values.items() if k not in MACHINE_ONLY}


def files_fingerprint(paths: list[str]) -> str:
    """The sha256 of every file under ``paths``: an edited source is seen even when its size and modification
    time were put back (about a second per GB read)."""
    from ownlm.io import sha256_file

    entries = []
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            entries.append((str(f), sha256_file(f) if f.is_file() else None))
    return _sha(entries)


def output_fingerprint(path: Path) -> str | None:
    """What a stage left behind: the sha256 of its defining file, or None when it is missing."""
    from ownlm.io import sha256_file

    step = RunFolder(path).latest() if path.is_dir() else None
    if step is not None:  # a training run: its latest checkpoint
        return files_fingerprint([str(step)]) if step.is_dir() else None
    for name in ("manifest.json", "tokenizer.json", "compare.json", "metrics.json"):
        if (path / name).is_file():
            return sha256_file(path / name)
    return sha256_file(path) if path.is_file() else None


class State:
    """``OUT/pipeline.json``: per stage, the key it finished with, its output fingerprint and timing."""

    def __init__(self, out: Path):
        from ownlm.io import read_json

        self.path = out / "pipeline.json"
        data = read_json(self.path, "pipeline state") if self.path.is_file() else {}
        if data and data.get("format") != STATE_FORMAT:
            raise UserError(f"{self.path}: not an ownlm pipeline state file; choose another --out")
        self.stages: dict[str, dict] = data.get("stages", {})
        self.last_run: dict[str, str] = {}

    def save(self) -> None:
        from ownlm.io import write_json

        data = {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "stages": self.stages,
            "last_run": self.last_run,
        }
        write_json(self.path, data)


class StageStopped(Exception):
    """A stage returned a non-zero exit code (130: pretraining was interrupted and saved a checkpoint)."""

    def __init__(self, name: str, code: int):
        super().__init__(f"{name} stopped with exit code {code}")
        self.name, self.code = name, code


class Pipeline:
    """Runs stages in order, skipping each one whose key and output are unchanged."""

    def __init__(self, out: Path, force: bool = False, total: int = 0, sources: list[str] = ()):
        from ownlm.io import mark_output, prepare_output

        self.out, self.force, self.total, self.n = out, force, total, 0
        # the output rule: a new or empty folder, or one a build made (never a user's folder holding run/)
        prepare_output(out, kind=STATE_FORMAT, folder=True, inputs=sources)
        for s in sources:  # nor inside a source folder: the next build would read its own outputs
            if Path(s).is_dir() and Path(s).resolve() in out.resolve().parents:
                raise UserError(f"--out {out}: is inside the source folder {s}; the next build would read its "
                                "own outputs as sources; give a folder outside it")  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        mark_output(out, STATE_FORMAT)
        self.state = State(out)

    def run(
        self, name: str, words: tuple[str, ...], values: dict, inputs: str, output: Path, what: str
    ) -> str:
        """Run ``ownlm WORDS`` with config ``values`` unless up to date; return the output fingerprint."""
        cls, entry = stage(*words)
        cfg = from_dict(cls, values, source=f"ownlm build ({name})")
        key = _sha(name, _made_by(to_dict(cfg)), inputs)
        self.n += 1
        head = f"[{self.n}/{self.total}] {name}"
        old = self.state.stages.get(name, {})
        current = output_fingerprint(output)
        if (
            not self.force
            and old.get("key") == key
            and old.get("status") == "done"
            and old.get("output") == current
        ):
            print(f"==> {head}: up to date, skipped ({what})", flush=True)
            self.state.last_run[name] = "skipped"
            self.state.save()
            return current
        training = name in TRAINING_STAGES
        resume = training and old.get("key") == key and old.get("status") == "running"
        if training:
            cfg.resume = resume and RunFolder(output).has_checkpoint()
            if not cfg.resume and output.exists():  # another run's checkpoints: keep them beside, not inside
                shutil.rmtree(output.with_name(output.name + ".old"), ignore_errors=True)
                output.rename(output.with_name(output.name + ".old"))
                print(f"    (the previous run was moved to {output.name}.old)")
        print(f"==> {head}: {what}{' (resuming)' if training and cfg.resume else ''}", flush=True)
        self.state.stages[name] = {
            "key": key,
            "status": "running",
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        self.state.save()
        t0 = time.perf_counter()
        code = entry(cfg)
        if code:
            raise StageStopped(name, code)  # the state still says "running": the next build resumes
        fingerprint = output_fingerprint(output)
        self.state.stages[name].update(
            status="done", output=fingerprint, seconds=round(time.perf_counter() - t0, 1)
        )
        self.state.last_run[name] = "ran"
        self.state.save()
        return fingerprint


# ----------------------------------------------------------------------------- the pipeline


def _is_documents_jsonl(src: str) -> bool:
    return Path(src).is_file() and Path(src).suffix.lower() in (".jsonl", ".ndjson")


def build(cfg: BuildConfig, prelude=None) -> Path:
    """Run every stage for ``cfg``; ``prelude(pipeline)`` may add stages first and return extra sources."""
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a folder")
    for s in cfg.sources:
        if not Path(s).exists():
            raise UserError(f"{s}: no such file or folder")
    if not cfg.sources and prelude is None:
        raise UserError(
            "no sources given: name files, folders, .zip archives or documents JSONL to learn from"
        )
    fine_tune = bool(cfg.person or cfg.sft_data)
    if cfg.base is not None:
        if not fine_tune:
            raise UserError("--base fine-tunes a model you have: add --person NAME or --sft-data FILE")
        from ownlm.model.checkpoint import resolve_checkpoint

        resolve_checkpoint(cfg.base)  # a clear error now, not after the persona stage
    own = cfg.base is None  # a tokenizer and a model of our own, trained here
    stages = (
        (5 + bool(cfg.compare) if own else 0)
        + (prelude is not None)
        + fine_tune
        + bool(cfg.person) * (3 + cfg.others_first)
    )
    sources = list(cfg.sources)
    raw = [s for s in sources if not _is_documents_jsonl(s)]
    stages += bool(raw)
    p = Pipeline(out, cfg.force, stages, sources)
    if prelude is not None:
        sources += prelude(p)
        raw = [s for s in sources if not _is_documents_jsonl(s)]
    docs = [s for s in sources if _is_documents_jsonl(s)]
    inputs = files_fingerprint(docs)
    if raw:
        values = {"inputs": raw, "out": str(out / "docs.jsonl"), "redact": cfg.redact, "password": cfg.password,
                  "text_field": cfg.text_field, "drop_system": cfg.drop_system}  # fmt: skip
        fp = extract_fp = p.run("extract", ("extract",), values, files_fingerprint(raw), out / "docs.jsonl",
                                f"reading {len(raw)} source(s)")  # fmt: skip
        docs, inputs = [str(out / "docs.jsonl"), *docs], _sha(fp, inputs)
    if own:
        run, run_fp = _pretrain(p, cfg, docs, inputs)
    else:
        run, run_fp = Path(cfg.base), files_fingerprint([cfg.base])
        print(f"==> base: {cfg.base} (no tokenizer training, no pretraining)", flush=True)
    if fine_tune:
        _fine_tune(p, cfg, out, run, run_fp, raw, extract_fp if raw else None)
    if own:
        _samples(p, cfg, run, run_fp)
    from ownlm.report import write_report

    report = write_report(out, p.state, samples_path=out / "samples.md" if own else None, base=cfg.base)
    print(f"==> report: {report}")
    return report


def _pretrain(p: Pipeline, cfg: BuildConfig, docs: list[str], inputs: str) -> tuple[Path, str | None]:
    """corpus -> tokenizer (-> compare) -> encode -> pretrain; returns the run folder and its fingerprint."""
    out = p.out
    corpus = out / "corpus"
    fp = p.run("corpus", ("corpus",), {"inputs": docs, "out": str(corpus), "min_chars": cfg.min_chars,
               "val_fraction": cfg.val_fraction, "near_dup": cfg.near_dup}, inputs, corpus,
               "cleaning, deduplicating and splitting the documents")  # fmt: skip
    tok = out / "tokenizer"
    tok_fp = p.run("tokenizer", ("tokenizer", "train"), {"inputs": [str(corpus)], "out": str(tok),
                   "bpe": to_dict(cfg.bpe)}, fp, tok,
                   f"training a {cfg.bpe.vocab_size:,}-token byte-level BPE on corpus/train.jsonl")  # fmt: skip
    if cfg.compare:
        p.run("compare", ("tokenizer", "compare"), {"inputs": [str(corpus)], "out": str(out / "compare"),
              "vocab_sizes": cfg.compare_sizes, "pattern": cfg.bpe.pattern}, fp, out / "compare",
              "characters vs words vs BPE on this corpus")  # fmt: skip
    tokens = out / "tokens"
    tokens_fp = p.run("encode", ("encode",), {"corpus": [str(corpus)], "tokenizer": str(tok), "out": str(tokens)},
                      _sha(fp, tok_fp), tokens, "encoding train and val into token shards")  # fmt: skip
    run = out / "run"
    run_fp = p.run("pretrain", ("pretrain",), {"model": to_dict(cfg.model), "train": to_dict(cfg.train),
                   "data": str(tokens), "out": str(run)}, tokens_fp, run,
                   f"training the model ({budget_text(cfg.train)})")  # fmt: skip
    return run, run_fp


def _fine_tune(
    p: Pipeline, cfg: BuildConfig, out: Path, run: Path, run_fp, raw: list[str], extract_fp
) -> None:
    """persona (-> sft-others) -> sft, from ``run`` (the pretrained model or --base)."""
    data, val, what = list(cfg.sft_data), list(cfg.sft_val_data), "instructions"
    minutes, base, base_fp = cfg.sft_minutes, run, run_fp
    data_fp = files_fingerprint(data + val)
    if cfg.person:
        if not raw:
            raise UserError("--person needs chat exports among the sources (WhatsApp, Telegram, ...)")
        persona = out / "persona"
        from ownlm.model.checkpoint import resolve_checkpoint
        from ownlm.tokenizer.chat import load_template

        # chats are conversations: the base's own chat template, else ChatML (never Alpaca's single turn)
        template = "auto" if load_template(resolve_checkpoint(run)) is not None else "chatml"
        persona_fp = p.run("persona", ("persona",), {"inputs": [str(out / "docs.jsonl")], "person": cfg.person,
                           "out": str(persona), "redact": cfg.redact, "others": True,
                           "val_fraction": cfg.val_fraction, "turns": to_dict(cfg.turns)},
                           extract_fp, persona, f"chat examples in which {cfg.person[0]} is the assistant")  # fmt: skip
        data, what, data_fp = (
            [str(persona), *data],
            f"{cfg.person[0]}'s replies",
            _sha(persona_fp, data_fp),
        )
        from ownlm.io import read_json

        stats = read_json(persona / "stats.json", "persona stats")
        n_others = stats["examples"].get("others", 0) if cfg.others_first else 0
        if cfg.others_first and not n_others:
            p.total -= 1  # nobody else replies in these chats: the person's stage alone
        if n_others:  # the chats' dialogue first, from everyone else's replies; then the person's voice
            minutes = cfg.sft_minutes / 2
            # scored on the person's held-out replies; too few of them for any: a part of the others' own
            person_val = [str(persona / "val.jsonl")] if stats["examples"]["val"] else []
            base = out / "sft-others"
            base_fp = p.run("sft-others", ("finetune", "sft"), {"base": str(run),
                            "data": [str(persona / "others.jsonl")], "val_data": person_val,
                            "out": str(base), **_adapt_values(cfg), "epochs": 1.0, "template": template,
                            "responses": 0,  # no answers before and after: persona-score samples this model
                            "train": {**_sft_train(cfg), "max_minutes": minutes}}, _sha(run_fp, persona_fp), base,
                            f"fine-tuning on the other senders' {n_others:,} replies (1 epoch or {minutes:g} "
                            "minutes, whichever ends first)")  # fmt: skip
    sft_train = {**_sft_train(cfg), "max_minutes": minutes}
    budget = f"{cfg.sft_epochs:g} epochs or {minutes:g} minutes" if cfg.sft_epochs else f"{minutes:g} minutes"
    sft_fp = p.run("sft", ("finetune", "sft"), {"base": str(base), "data": data, "val_data": val,
                   "out": str(out / "sft"), **_adapt_values(cfg), "epochs": cfg.sft_epochs, "patience": cfg.patience,
                   "train": sft_train}, _sha(base_fp, data_fp), out / "sft",
                   f"fine-tuning on {what} ({budget}, whichever ends first)")  # fmt: skip
    if cfg.person and cfg.score_replies and stats["examples"]["val"]:
        score_minutes = cfg.score_minutes or cfg.sft_minutes / 2
        everyone = str(out / "sft-others") if n_others else ""
        p.run("persona-score", ("persona", "score"), {"persona": str(persona), "model": str(out / "sft"),
              "everyone": everyone, "base": str(run), "out": str(out / "persona-score"),
              "max_replies": cfg.score_replies, "max_minutes": score_minutes, "device": cfg.train.device,
              "sampling": {"seed": cfg.train.seed, "max_new_tokens": 64}},
              _sha(sft_fp, base_fp, run_fp), out / "persona-score",
              f"how much like {cfg.person[0]} the model sounds: held-out reply loss and a style classifier "
              f"on {cfg.score_replies} sampled replies ({score_minutes:g} minutes at most)")  # fmt: skip
    elif cfg.person:
        p.total -= 1
    if cfg.person and cfg.export_gguf and _exportable(out / "sft"):
        gguf_path = out / "export" / "model.gguf"
        p.run("export", ("export",), {"run": str(out / "sft"), "to": "gguf", "out": str(gguf_path), "force": True},
              sft_fp, gguf_path, "the persona model as a GGUF file for llama.cpp, with an Ollama Modelfile")  # fmt: skip
        write_modelfile(gguf_path, out / "sft")
    elif cfg.person:
        p.total -= 1


def _exportable(run: Path) -> bool:
    """Whether llama.cpp has a block for this model (else the export stage is skipped, and said why)."""
    from ownlm.export import block_kind
    from ownlm.model.checkpoint import read_checkpoint_config, resolve_checkpoint
    from ownlm.model.gpt import GPTConfig

    try:
        block_kind(GPTConfig.from_dict(read_checkpoint_config(resolve_checkpoint(run))["model"]), "GGUF")
    except UserError as e:
        print(f"==> export: skipped ({e})", flush=True)
        return False
    return True


# Ollama's own (Go) template for ChatML, the layout `ownlm finetune sft` trains chats with
OLLAMA_CHATML = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"


def write_modelfile(gguf_path: Path, run: Path) -> Path:
    """An Ollama ``Modelfile`` beside ``gguf_path``: the model, its chat layout (for ChatML) and stop tokens, so
    ``ollama create NAME -f Modelfile`` makes a chat model of the export."""
    from ownlm.io import write_text
    from ownlm.model.checkpoint import resolve_checkpoint
    from ownlm.runtime.text import stop_ids
    from ownlm.tokenizer import Tokenizer
    from ownlm.tokenizer.chat import load_template

    folder = resolve_checkpoint(run)
    tok, template = Tokenizer.load(folder / "tokenizer.json"), load_template(folder)
    lines = [f"FROM ./{gguf_path.name}"]
    if template is not None and "<|im_start|>" in template.special_tokens():
        lines.append(f'TEMPLATE """{OLLAMA_CHATML}"""')
    for i in stop_ids(tok, template):
        lines.append(f'PARAMETER stop "{tok.decode([i])}"')
    path = gguf_path.parent / "Modelfile"
    write_text(path, "\n".join(lines) + "\n")
    return path


def _adapt_values(cfg: BuildConfig) -> dict:
    """How the fine-tuning stages adapt the model. From a real base (--base): LoRA of rank 8 on frozen bf16
    weights, with activation checkpointing and packing, so that a 100 M+ model fine-tunes in a laptop's memory."""
    rank = cfg.adapt.lora_rank if cfg.adapt.lora_rank >= 0 else (8 if cfg.base else 0)
    frozen_ok = cfg.base is not None and rank and cfg.train.dtype in ("auto", "bf16")  # under bf16 autocast
    values = {**to_dict(cfg.adapt), "lora_rank": rank,  # flat keys: they land in the stage's `adapt` section
              "base_dtype": cfg.adapt.base_dtype if frozen_ok else "fp32"}  # fmt: skip
    if cfg.base is not None:
        values.update(
            pack=True,
            max_length=cfg.model.block_size or 512,  # packed rows of 512 tokens, not a real base's 8k context
        )
    return values


def _sft_train(cfg: BuildConfig) -> dict:
    """The fine-tuning stages' training settings (their time budget set by the caller). A real base (--base)
    always recomputes activations, so that a 100 M+ model fine-tunes in a laptop's memory."""
    return {"lr": cfg.sft_lr, "min_lr": cfg.sft_lr / 10, "device": cfg.train.device, "dtype": cfg.train.dtype,
            "seed": cfg.train.seed,
            "checkpoint_activations": cfg.train.checkpoint_activations or cfg.base is not None,
            "memory_mode": cfg.train.memory_mode}  # fmt: skip


def budget_text(tc: TrainingConfig) -> str:
    """ "10 minutes", "2,000 steps", "1,000,000 tokens", "2 epochs" — the budget a run was given, in words."""
    parts = []
    if tc.max_minutes:
        parts.append(f"{tc.max_minutes:g} minute{'s' if tc.max_minutes != 1 else ''}")
    if tc.max_iters:
        parts.append(f"{tc.max_iters:,} step{'s' if tc.max_iters != 1 else ''}")
    if tc.max_tokens:
        parts.append(f"{tc.max_tokens:,} tokens")
    epochs = tc.epochs or (0.0 if parts else DEFAULT_EPOCHS)  # none given: the driver's one default
    if epochs:
        parts.append(f"{epochs:g} epoch{'s' if epochs != 1 else ''}")
    return " or ".join(parts)


# Weights' dtype for the final samples: what training used, and fp32 for "auto" (small models sample faster in
# fp32 on CPUs, and a few short samples gain nothing from half precision on GPUs).
def _sample_dtype(train_dtype: str) -> str:
    return "fp32" if train_dtype == "auto" else train_dtype


def _samples(p: Pipeline, cfg: BuildConfig, run: Path, run_fp: str | None) -> str | None:
    """The last stage: a few texts from the trained model, written to ``OUT/samples.md``."""
    prompts = cfg.prompts or ["", "", ""]
    settings = {
        "prompts": prompts,
        "tokens": cfg.sample_tokens,
        "temperature": cfg.temperature,
        "seed": cfg.train.seed,
    }
    key = _sha("samples", settings, run_fp)
    path = p.out / "samples.md"
    p.n += 1
    old = p.state.stages.get("samples", {})
    if (
        not p.force
        and old.get("key") == key
        and path.is_file()
        and old.get("output") == output_fingerprint(path)
    ):
        print(f"==> [{p.n}/{p.total}] samples: up to date, skipped")
        p.state.last_run["samples"] = "skipped"
        p.state.save()
        return old["output"]
    print(f"==> [{p.n}/{p.total}] samples: {len(prompts)} texts from the trained model", flush=True)
    cls, entry = stage("generate")
    t0 = time.perf_counter()
    texts = []
    for i, prompt in enumerate(prompts):
        gen = from_dict(cls, {"run": str(run), "prompt": prompt, "max_new_tokens": cfg.sample_tokens,
                              "temperature": cfg.temperature, "seed": cfg.train.seed + i, "stream": False,
                              "dtype": _sample_dtype(cfg.train.dtype)})  # fmt: skip
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            entry(gen)
        texts.append((prompt, buf.getvalue().rstrip("\n")))
    from ownlm.io import write_text

    lines = [
        "# Samples\n",
        f"From `{run}`, {cfg.sample_tokens} tokens each, temperature {cfg.temperature}.\n",
    ]
    for i, (prompt, text) in enumerate(texts, 1):
        label = f"prompt `{prompt.strip()[:60]}`" if prompt else "no prompt (from <|endoftext|>)"
        lines += [f"## Sample {i}: {label}\n", "```text", text, "```\n"]
    write_text(path, "\n".join(lines))
    for _, text in texts:
        print("    " + "-" * 60)
        print("    " + text.replace("\n", "\n    "))
    fp = output_fingerprint(path)
    p.state.stages["samples"] = {
        "key": key,
        "status": "done",
        "output": fp,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    p.state.last_run["samples"] = "ran"
    p.state.save()
    return fp


def _stopped(e: StageStopped, out: str) -> int:
    if e.code == 130:
        print(f"\nownlm: {e.name} was interrupted; run the same command again to continue where it stopped")
    else:
        print(f"\nownlm: {e.name} stopped (exit code {e.code}); {out}/pipeline.json records what finished")
    return e.code


def build_main(cfg: BuildConfig) -> int:
    try:
        build(cfg)
    except StageStopped as e:
        return _stopped(e, cfg.out)
    return 0


# ----------------------------------------------------------------------------- the demo

DEMO_PROMPTS = ['The "for" statement', "def ", "Return a new list"]


def demo_config(cfg: DemoConfig) -> BuildConfig:
    """The demo's settings, sized for a few minutes of a 2-core CPU on ~0.55 M training tokens.

    With so little compute the budget, not the data, is the limit (Hoffmann et al. 2022: the best model for a
    budget C has roughly N = sqrt(C / 120) parameters), so the model is small — 4 layers x 192 wide, 2.2 M
    parameters — and batches are small, so that the run takes hundreds of optimiser steps rather than dozens.
    """
    return BuildConfig(
        out=cfg.out,
        bpe=BPEConfig(vocab_size=cfg.vocab_size),
        compare=cfg.compare,
        model=ModelShape(n_layer=4, n_head=4, n_embd=192, block_size=128),
        train=PretrainingConfig(
            batch_size=16,
            lr=2e-3,
            max_minutes=cfg.minutes,
            eval_iters=20,  # 20 batches of 16 x 128 cover most of the ~70 k validation tokens
        ),
        prompts=DEMO_PROMPTS,
        sample_tokens=100,
        sft_minutes=cfg.sft_minutes,
        force=cfg.force,
    )


def demo_main(cfg: DemoConfig) -> int:
    out = Path(cfg.out)

    def python_docs(p: Pipeline) -> list[str]:
        folder = out / "python-docs"
        p.run("python-docs", ("corpus", "python-docs"), {"out": str(folder)}, sys.version, folder,
              "collecting the documentation that ships with Python (no download)")  # fmt: skip
        return [str(folder / "docs.jsonl")]

    config = demo_config(cfg)
    config.sft_data = [str(out / "python-docs" / "instructions" / "train.jsonl")]
    config.sft_val_data = [str(out / "python-docs" / "instructions" / "val.jsonl")]

    t0 = time.perf_counter()
    try:
        report = build(config, prelude=python_docs)
    except StageStopped as e:
        return _stopped(e, cfg.out)
    from ownlm.report import compare_table

    table = compare_table(out, example_tokens=6)
    if table:
        print("\nCharacters, words or BPE on this corpus (compare/compare.md has the full table):\n")
        print("\n".join(table))
    print(f"\nDone in {(time.perf_counter() - t0) / 60:.1f} minutes. Open {report} to see what was made.")
    return 0
