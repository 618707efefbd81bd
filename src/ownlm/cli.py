"""The ``ownlm`` command: one table of subcommands.

Each row names the words that select it, the stage module's config dataclass and its entry function.
Only the chosen stage is imported, so ``ownlm --help`` is instant and torch loads only where needed.
Every entry function takes the parsed config and returns an exit code (0 on success).
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from dataclasses import dataclass

from ownlm.errors import UserError, disk_full, out_of_memory


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    config: str  # "module:ConfigClass"
    entry: str  # "module:function"
    help: str


COMMANDS: list[Command] = [
    Command(
        ("extract",),
        "ownlm.extract.stage:ExtractConfig",
        "ownlm.extract.stage:main",
        "extract text from files, folders and zips (txt, md, html, pdf, epub, docx, json, csv, chats) to JSONL",
    ),
    Command(
        ("corpus",),
        "ownlm.corpus:CorpusConfig",
        "ownlm.corpus:main",
        "clean, normalise, deduplicate and split documents into corpus/{train,val}.jsonl",
    ),
    Command(
        ("corpus", "stats"),
        "ownlm.corpus_stats:StatsConfig",
        "ownlm.corpus_stats:stats_main",
        "print a corpus' sizes, documents, duplicates removed and a length histogram (PNG)",
    ),
    Command(
        ("corpus", "python-docs"),
        "ownlm.pydocs:PythonDocsConfig",
        "ownlm.pydocs:main",
        "write the embedded default corpus (Python's own documentation) as documents JSONL",
    ),
    Command(
        ("tokenizer", "train"),
        "ownlm.tokenizer.cli:TrainConfig",
        "ownlm.tokenizer.cli:train_main",
        "train a byte-level BPE tokenizer on text files, folders or documents JSONL",
    ),
    Command(
        ("tokenizer", "encode"),
        "ownlm.tokenizer.cli:EncodeConfig",
        "ownlm.tokenizer.cli:encode_main",
        "encode text to token ids with a trained tokenizer",
    ),
    Command(
        ("tokenizer", "decode"),
        "ownlm.tokenizer.cli:DecodeConfig",
        "ownlm.tokenizer.cli:decode_main",
        "decode token ids back to text",
    ),
    Command(
        ("tokenizer", "inspect"),
        "ownlm.tokenizer.cli:InspectConfig",
        "ownlm.tokenizer.cli:inspect_main",
        "show a tokenizer's size, pattern, special tokens and sample merges",
    ),
    Command(
        ("tokenizer", "export"),
        "ownlm.tokenizer.cli:ExportConfig",
        "ownlm.tokenizer.cli:export_main",
        "export a tokenizer to tiktoken (.tiktoken) or Hugging Face tokenizer.json",
    ),
    Command(
        ("tokenizer", "compare"),
        "ownlm.tokenizer.cli:CompareConfig",
        "ownlm.tokenizer.cli:compare_main",
        "character- vs word- vs BPE-level tokenization on your corpus: vocabulary against sequence length",
    ),
    Command(
        ("encode",),
        "ownlm.data.encode:EncodeConfig",
        "ownlm.data.encode:main",
        "encode a corpus' train/val splits into token shards on disk",
    ),
    Command(
        ("pretrain",),
        "ownlm.train.pretrain:PretrainConfig",
        "ownlm.train.pretrain:main",
        "pretrain a GPT on token shards, with validation, checkpoints and resume",
    ),
    Command(
        ("eval",),
        "ownlm.train.evaluate:EvalConfig",
        "ownlm.finetune.score:main",
        "print a checkpoint's validation loss, perplexity and bits per byte, or its loss on chat data's last replies",
    ),
    Command(
        ("generate",),
        "ownlm.generate:GenerateConfig",
        "ownlm.generate:main",
        "generate text from a checkpoint",
    ),
    Command(
        ("persona",),
        "ownlm.finetune.persona:PersonaConfig",
        "ownlm.finetune.persona:main",
        "turn chat conversations into fine-tuning examples in which one person is the assistant",
    ),
    Command(
        ("persona", "score"),
        "ownlm.finetune.persona_score:PersonaScoreConfig",
        "ownlm.finetune.persona_score:main",
        "how much like the person a model sounds: held-out reply loss and a style classifier's rate",
    ),
    Command(
        ("import", "gguf"),
        "ownlm.importers.gguf:ImportGGUFConfig",
        "ownlm.importers.gguf:main",
        "import a GGUF file (llama, qwen2, gpt2: Llama, SmolLM, Mistral, Qwen2 ...) with its tokenizer and chat template",
    ),
    Command(
        ("import", "hf"),
        "ownlm.importers.hf:ImportHFConfig",
        "ownlm.importers.hf:main",
        "import a Hugging Face model folder or hub id (Llama, Mistral, Qwen2, GPT-2) with its tokenizer and chat template",
    ),
    Command(
        ("import", "gpt2"),
        "ownlm.importers.hf:ImportGPT2Config",
        "ownlm.importers.hf:main_gpt2",
        "import OpenAI GPT-2 weights (Hugging Face folder or model name): the short form of import hf",
    ),
    Command(
        ("export",),
        "ownlm.export.cli:ExportConfig",
        "ownlm.export.cli:main",
        "export a model to a Hugging Face transformers folder (--to hf) or a llama.cpp GGUF file (--to gguf)",
    ),
    Command(
        ("serve",),
        "ownlm.serve.cli:ServeConfig",
        "ownlm.serve.cli:main",
        "serve a checkpoint: OpenAI-compatible API (/v1/completions, /v1/chat/completions) and a chat page",
    ),
    Command(
        ("finetune", "sft"),
        "ownlm.finetune.sft:SFTConfig",
        "ownlm.finetune.sft:main",
        "fine-tune a model on instructions or conversations (loss on the responses; full, partial or LoRA)",
    ),
    Command(
        ("finetune", "merge"),
        "ownlm.finetune.sft:MergeConfig",
        "ownlm.finetune.sft:merge_main",
        "fold a LoRA run's adapters into full weights",
    ),
    Command(
        ("finetune", "dpo"),
        "ownlm.finetune.dpo:DPOConfig",
        "ownlm.finetune.dpo:main",
        "preference-tune a model on pairs of replies, one preferred (DPO; full, partial or LoRA)",
    ),
    Command(
        ("finetune", "classify"),
        "ownlm.finetune.classify:ClassifyConfig",
        "ownlm.finetune.classify:main",
        "fine-tune a model to classify texts (spam or not, any labels) from a CSV/TSV/JSONL",
    ),
    Command(
        ("classify",),
        "ownlm.finetune.classify:PredictConfig",
        "ownlm.finetune.classify:predict_main",
        "label texts (or every row of a CSV/JSONL) with a classifier from `ownlm finetune classify`",
    ),
    Command(
        ("chat",),
        "ownlm.chat:ChatConfig",
        "ownlm.chat:main",
        "talk to a chat-tuned model in the terminal (reads turns from stdin when it is not a terminal)",
    ),
    Command(
        ("build",),
        "ownlm.pipeline:BuildConfig",
        "ownlm.pipeline:build_main",
        "run the whole pipeline: extract -> corpus -> tokenizer -> encode -> pretrain -> samples",
    ),
    Command(
        ("demo",),
        "ownlm.pipeline:DemoConfig",
        "ownlm.pipeline:demo_main",
        "the whole pipeline on the embedded Python-documentation corpus (about 5 minutes on a laptop CPU)",
    ),
]


def _load(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _usage() -> str:
    lines = ["usage: ownlm COMMAND [flags]   (ownlm COMMAND --help for its flags)", "", "commands:"]
    width = max(len(" ".join(c.words)) for c in COMMANDS)
    for c in COMMANDS:
        lines.append(f"  {' '.join(c.words):<{width}}  {c.help}")
    return "\n".join(lines)


def find_command(argv: list[str]) -> tuple[Command | None, list[str]]:
    """The longest table row whose words start ``argv``, and the remaining arguments."""
    best = None
    for c in COMMANDS:
        n = len(c.words)
        if tuple(argv[:n]) == c.words and (best is None or n > len(best.words)):
            best = c
    if best is None:
        return None, argv
    return best, argv[len(best.words) :]


def _group_usage(word: str) -> str:
    group = [c for c in COMMANDS if c.words[0] == word]
    width = max(len(" ".join(c.words)) for c in group)
    lines = [f"usage: ownlm {word} SUBCOMMAND [flags]   (ownlm {word} SUBCOMMAND --help for its flags)", ""]
    lines += ["subcommands:"] + [f"  {' '.join(c.words):<{width}}  {c.help}" for c in group]
    return "\n".join(lines)


def run(argv: list[str]) -> int:
    from ownlm.config import parse_args

    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] == "--version":
        from ownlm import __version__

        print(f"ownlm {__version__}")
        return 0
    cmd, rest = find_command(argv)
    if cmd is None:
        group = [c for c in COMMANDS if c.words[0] == argv[0]]
        if group and any(a in ("-h", "--help", "help") for a in argv[1:2]):
            print(_group_usage(argv[0]))
            return 0
        if group:
            names = ", ".join(" ".join(c.words) for c in group)
            raise UserError(f"'ownlm {argv[0]}' needs a subcommand: {names} (ownlm {argv[0]} --help)")
        raise UserError(f"unknown command '{argv[0]}'\n{_usage()}")
    prog = "ownlm " + " ".join(cmd.words)
    cfg = parse_args(_load(cmd.config), rest, prog, description=cmd.help)
    out = getattr(cfg, "out", None)
    _OUTPUT[:] = [str(out)] if out else []
    return int(_load(cmd.entry)(cfg) or 0)


_OUTPUT: list[str] = []  # the running command's --out, to name it when a full disk does not say which file


def explain(e: BaseException, output: str | None = None) -> tuple[str, int] | None:
    """A one-line message and exit code for errors of the machine rather than of ownlm: out of memory (2),
    a full disk (2, naming the file, else ``output``: the command's --out), no permission or a read-only place
    (2), another OS error naming a file (2); else None.

    >>> import errno; explain(OSError(errno.ENOSPC, "No space left on device", "out/x.bin"))
    ('disk full while writing out/x.bin: free some space or write --out elsewhere', 2)
    >>> explain(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"))[1]
    2
    """
    import errno

    if out_of_memory(e):
        return (
            f"out of memory{f' making {output}' if output else ''}: use a smaller model, --batch-size or input, "
            "or fewer --workers "
            f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else 'allocation failed'})",
            2,
        )
    filename = getattr(e, "filename", None)
    if disk_full(e):
        where = filename if filename is not None else output or "the output"
        return f"disk full while writing {where}: free some space or write --out elsewhere", 2
    if isinstance(e, OSError):
        where = filename if filename is not None else "a file"
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"{where}: {e.strerror or 'permission denied'}: choose a place you can write (--out)", 2
        if e.filename is not None:
            return f"{where}: {e.strerror or e}", 2
    return None


def main(argv: list[str] | None = None) -> int:
    """The ``ownlm`` command. Mistakes are one line (exit 2); so are out-of-memory, a full disk and missing
    permissions; an unexpected error is one line plus how to see the traceback (exit 1): ``--debug``
    anywhere on the command line or ``OWNLM_DEBUG=1`` prints it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("OWNLM_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]
    try:
        return run(argv)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"ownlm: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("ownlm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `ownlm ... | head`: the reader went away; exit quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # the guard: no user ever sees a traceback they did not ask for
        if debug:
            traceback.print_exc()
        known = explain(e, _OUTPUT[0] if _OUTPUT else None)
        if known is not None:
            print(f"ownlm: error: {known[0]}", file=sys.stderr)
            return known[1]
        first = (str(e).splitlines() or [""])[0][:300]
        print(f"ownlm: internal error: {type(e).__name__}: {first}", file=sys.stderr)
        if not debug:
            print("ownlm: run with --debug for the traceback (and please report it)", file=sys.stderr)
        return 1
