"""ownlm build / demo: the stages chained end to end, skipped when up to date, re-run only downstream of a change."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ownlm.cli import main as cli
from ownlm.config import from_dict, to_dict
from ownlm.pipeline import BuildConfig, DemoConfig, build, demo_config, stage

TINY = dict(
    n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4, max_iters=4, max_minutes=0.0, eval_interval=4,
    vocab_size=280, sample_tokens=6, prompts=["The"], device="cpu", dtype="fp32",
)  # fmt: skip


def _flags(values: dict) -> list[str]:
    argv = []
    for k, v in values.items():
        flag = "--" + k.replace("_", "-")
        argv += [flag, *map(str, v)] if isinstance(v, list) else [flag, str(v)]
    return argv


@pytest.fixture
def texts(tmp_path) -> Path:
    """A small folder of text files: a few paragraphs each, different words in each file."""
    rng = random.Random(0)
    words = "the cat sat on a mat while dogs ran far away from home and back again".split()
    folder = tmp_path / "texts"
    folder.mkdir()
    for i in range(4):
        paras = [" ".join(rng.choice(words) for _ in range(60)).capitalize() + "." for _ in range(8)]
        (folder / f"note{i}.txt").write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    return folder


def _state(out: Path) -> dict:
    return json.loads((out / "pipeline.json").read_text())


def _build(texts: Path, out: Path, **changes) -> dict:
    build(from_dict(BuildConfig, {"out": str(out), "sources": [str(texts)], **TINY, **changes}))
    return _state(out)["last_run"]


def test_build_end_to_end_then_skip_then_rerun_only_what_changed(texts, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["build", str(texts), "--out", str(out), *_flags(TINY)]) == 0
    state = _state(out)
    stages = ["extract", "corpus", "tokenizer", "encode", "pretrain", "samples"]
    assert state["last_run"] == dict.fromkeys(stages, "ran")
    latest = (out / "run" / "latest").read_text().strip()
    assert (out / "run" / latest / "model.safetensors").is_file()
    samples = (out / "samples.md").read_text(encoding="utf-8")
    assert "```text\nThe" in samples  # the prompt, continued
    assert "only 4 pretraining steps: expect noise" in (out / "report.md").read_text()
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Samples" in report and "parameters" in report
    capsys.readouterr()

    # Nothing changed: every stage is skipped, the outputs are untouched.
    weights = (out / "run" / latest / "model.safetensors").stat().st_mtime_ns
    assert _build(texts, out) == dict.fromkeys(stages, "skipped")
    assert (out / "run" / latest / "model.safetensors").stat().st_mtime_ns == weights
    assert "up to date" in capsys.readouterr().out

    # How the machine runs it (threads, glibc's memory mode, progress lines) is not what it makes: still skipped.
    machine_only = _build(texts, out, threads=1, memory_mode="lean", log_seconds=5.0)
    assert machine_only == dict.fromkeys(stages, "skipped")

    # A training setting: only training and what follows it.
    assert _build(texts, out, max_iters=6) == {
        **dict.fromkeys(["extract", "corpus", "tokenizer", "encode"], "skipped"),
        **dict.fromkeys(["pretrain", "samples"], "ran"),
    }
    assert (out / "run" / "latest").read_text().strip() == "step_000006"
    assert (out / "run.old").is_dir()  # the previous run is kept aside, not overwritten

    # A tokenizer setting: the tokenizer and everything downstream of it.
    assert _build(texts, out, max_iters=6, vocab_size=290) == {
        **dict.fromkeys(["extract", "corpus"], "skipped"),
        **dict.fromkeys(["tokenizer", "encode", "pretrain", "samples"], "ran"),
    }

    # A changed source file: everything.
    (texts / "note0.txt").write_text("Something new entirely. " * 50, encoding="utf-8")
    assert set(_build(texts, out, max_iters=6, vocab_size=290).values()) == {"ran"}

    # A deleted output is noticed and re-made, and what it feeds runs again.
    (out / "tokens" / "manifest.json").unlink()
    last = _build(texts, out, max_iters=6, vocab_size=290)
    assert last["tokenizer"] == "skipped" and last["encode"] == "ran"


def test_interrupted_pretraining_resumes(texts, tmp_path, capsys):
    out = tmp_path / "out"
    _build(texts, out)
    # Pretend the run was cut off: the state still says "running" with the same key.
    state = _state(out)
    state["stages"]["pretrain"]["status"] = "running"
    (out / "pipeline.json").write_text(json.dumps(state))
    capsys.readouterr()
    last = _build(texts, out)
    assert last["pretrain"] == "ran" and last["corpus"] == "skipped"
    assert "(resuming)" in capsys.readouterr().out
    assert not (out / "run.old").exists()  # continued in place, not restarted


def test_a_stopped_stage_stops_the_build_with_its_exit_code(texts, tmp_path, capsys, monkeypatch):
    import ownlm.pipeline as pipeline

    real = pipeline.stage

    def interrupted_pretrain(*words):
        cls, entry = real(*words)
        return (cls, lambda cfg: 130) if words == ("pretrain",) else (cls, entry)

    monkeypatch.setattr(pipeline, "stage", interrupted_pretrain)
    out = tmp_path / "out"
    assert cli(["build", str(texts), "--out", str(out), *_flags(TINY)]) == 130
    assert "interrupted" in capsys.readouterr().out
    state = _state(out)
    assert state["stages"]["pretrain"]["status"] == "running" and "samples" not in state["stages"]
    assert not (out / "report.md").exists()


def test_documents_jsonl_sources_skip_extraction(tmp_path):
    docs = tmp_path / "docs.jsonl"
    rng = random.Random(1)
    with open(docs, "w", encoding="utf-8") as f:
        for i in range(12):
            text = " ".join(f"w{rng.randrange(500)}" for _ in range(80))
            f.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    last = _build(docs, tmp_path / "out")
    assert "extract" not in last and last["corpus"] == "ran"


def test_bad_sources_are_clear_errors(tmp_path, capsys):
    assert cli(["build", "--out", str(tmp_path / "o")]) == 2
    assert cli(["build", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    (tmp_path / "file").write_text("x")
    assert cli(["build", str(tmp_path / "file"), "--out", str(tmp_path / "file")]) == 2
    err = capsys.readouterr().err
    assert "no sources" in err and "missing" in err and "Traceback" not in err


def test_demo_settings_are_valid_for_every_stage():
    cfg = demo_config(DemoConfig())
    assert cfg.train.max_minutes > 0 and cfg.compare and cfg.prompts
    cls, _ = stage("pretrain")
    values = {"model": to_dict(cfg.model), "train": to_dict(cfg.train)}
    from_dict(cls, {**values, "data": "t", "out": "r"})  # raises if a setting is unknown or mistyped
    tcls, _ = stage("tokenizer", "train")
    from_dict(tcls, {"inputs": ["c"], "out": "t", "bpe": to_dict(cfg.bpe)})


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli(["demo", "--out", str(out), "--minutes", "0.3"]) == 0
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Samples" in report and "Characters, words or BPE?" in report and "run/loss.png" in report
    assert (out / "run" / "loss.png").is_file() and (out / "compare" / "compare.png").is_file()
    assert "Open" in capsys.readouterr().out
    assert cli(["demo", "--out", str(out), "--minutes", "0.3"]) == 0
    assert set(_state(out)["last_run"].values()) == {"skipped"}


def test_report_counts_parameters_from_the_safetensors_header(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    from ownlm.report import count_parameters

    tensors = {
        "a": np.zeros((3, 4), np.float32),
        "b": np.zeros(7, np.float16),
        "c": np.zeros((2, 2, 2), np.int64),
    }
    save_file(tensors, str(tmp_path / "m.safetensors"))
    assert count_parameters(tmp_path / "m.safetensors") == 12 + 7 + 8
    assert count_parameters(tmp_path / "missing.safetensors") == 0


def test_build_with_person_goes_from_a_chat_export_to_a_chat_model(tmp_path, capsys):
    """--person adds the persona and fine-tuning stages; the build folder then works with `ownlm chat`."""
    rng = random.Random(1)
    words = "tea later maybe sure fine thanks see you soon where home now great".split()
    lines = []
    for i in range(120):
        who = "Ann" if i % 2 else "Bob"
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        lines.append(f"13/01/2024, {10 + i // 60:02d}:{i % 60:02d} - {who}: {text}")
    chats = tmp_path / "chats"
    chats.mkdir()
    (chats / "WhatsApp Chat with Bob.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    flags = _flags({**TINY, "block_size": 64, "sft_minutes": 0.05})
    assert cli(["build", str(chats), "--out", str(out), "--person", "Ann", *flags]) == 0
    state = _state(out)
    assert (
        state["last_run"]["persona"] == state["last_run"]["sft-others"] == state["last_run"]["sft"] == "ran"
    )
    stats = json.loads((out / "persona" / "stats.json").read_text())
    assert stats["examples"]["train"] > 0 and stats["examples"]["others"] > 0
    # the other senders' replies come first, all from before the person's held-out ones, none of them Ann's
    others = [json.loads(line) for line in (out / "persona" / "others.jsonl").read_text().splitlines()]
    assert all(ex["time"] < stats["val_from"] for ex in others)
    bob = {line.split(" - Bob: ", 1)[1] for line in lines if " - Bob: " in line}
    assert {ex["messages"][-1]["content"] for ex in others} <= bob and len(others) == stats["examples"][
        "others"
    ]
    sft_config = json.loads((out / "sft" / "config.json").read_text())
    assert Path(sft_config["base"]) == out / "sft-others"  # the person's stage continues the others' model
    # the everyone stage spends its budget on training: no answers before and after (persona-score samples it)
    assert not (out / "sft-others" / "responses.jsonl").exists()
    step = out / "sft" / (out / "sft" / "latest").read_text().strip()
    assert json.loads((step / "chat_template.json").read_text())["name"] == "chatml"
    assert "## Fine-tuning" in (out / "report.md").read_text()
    from ownlm.model.checkpoint import resolve_checkpoint

    assert resolve_checkpoint(out) == step  # a build folder works wherever a run folder does
    # the chat model's tokenizer only adds <|im_start|>/<|im_end|>: it still evaluates on the pretraining tokens
    assert cli(["eval", str(out), "--data", str(out / "tokens")]) == 0
    assert "bits/byte" in capsys.readouterr().out
    assert cli(["build", str(chats), "--out", str(out), "--person", "Ann", *flags]) == 0
    assert set(_state(out)["last_run"].values()) == {"skipped"}
    # --no-others-first: the person's replies alone, straight from the pretrained model
    assert cli(["build", str(chats), "--out", str(out), "--person", "Ann", "--no-others-first", *flags]) == 0
    assert Path(json.loads((out / "sft" / "config.json").read_text())["base"]) == out / "run"


def test_build_person_with_too_few_replies_to_hold_any_out(tmp_path):
    """One reply of the person leaves no validation replies: the others' stage then holds out some of its own."""
    lines = [f"13/01/2024, {10 + i // 60}:{i % 60:02d} - {('Bob', 'Cat')[i % 2]}: hi" for i in range(120)]
    lines.insert(60, "13/01/2024, 11:00 - Ann: ok")
    chats = tmp_path / "chats"
    chats.mkdir()
    (chats / "WhatsApp Chat with Bob.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    flags = _flags({**TINY, "block_size": 128, "sft_minutes": 0.05, "compare": None})[:-1]
    flags[flags.index("--compare")] = "--no-compare"
    assert cli(["build", str(chats), "--out", str(out), "--person", "Ann", *flags]) == 0
    stats = json.loads((out / "persona" / "stats.json").read_text())
    assert (
        stats["examples"] == {"train": 1, "val": 0, "others": stats["examples"]["others"]}
        and stats["examples"]["others"]
    )
    assert json.loads((out / "sft-others" / "config.json").read_text())["val_data"] == []
    assert (out / "sft" / "latest").is_file()


def _chat_export(tmp_path: Path, n: int = 120) -> Path:
    rng = random.Random(1)
    words = "tea later maybe sure fine thanks see you soon where home now great".split()
    lines = []
    for i in range(n):
        who = "Ann" if i % 2 else "Bob"
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        lines.append(f"13/01/2024, {10 + i // 60:02d}:{i % 60:02d} - {who}: {text}")
    chats = tmp_path / "chats"
    chats.mkdir()
    (chats / "WhatsApp Chat with Bob.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return chats


def test_build_person_from_a_base_skips_tokenizer_and_pretraining(tmp_path):
    """--base: the persona is fine-tuned from a model given (LoRA on a frozen bf16 base), with its own tokenizer;
    the persona flags reach the persona stage."""
    import torch

    from ownlm.model.checkpoint import resolve_checkpoint, save_model
    from ownlm.model.gpt import GPT, GPTConfig
    from ownlm.tokenizer import Tokenizer
    from ownlm.tokenizer.chat import add_special_tokens

    torch.manual_seed(0)
    base = tmp_path / "base"
    tok = add_special_tokens(Tokenizer(special_tokens={"<|endoftext|>": 256}), ["<|im_start|>", "<|im_end|>"])
    save_model(
        base,
        GPT(
            GPTConfig(
                vocab_size=320,
                block_size=96,
                n_layer=2,
                n_head=2,
                n_embd=32,
                pos="rope",
                norm="rmsnorm",
                mlp="swiglu",
            )
        ),
        tok,
    )
    chats, out = _chat_export(tmp_path), tmp_path / "out"
    args = ["build", str(chats), "--out", str(out), "--person", "Ann", "--base", str(base), "--sft-minutes", "0.1",
            "--context-turns", "2", "--val-fraction", "0.2", "--device", "cpu", "--no-progress", "--score-replies", "6"]  # fmt: skip
    assert cli(args) == 0
    state = _state(out)
    assert set(state["last_run"]) == {"extract", "persona", "sft-others", "sft", "persona-score", "export"}
    from gguf import GGUFReader

    assert len(GGUFReader(out / "export" / "model.gguf").tensors) > 0
    modelfile = (out / "export" / "Modelfile").read_text()
    assert modelfile.startswith("FROM ./model.gguf") and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "<|im_start|>{{ .Role }}" in modelfile
    assert not (out / "tokenizer").exists() and not (out / "run").exists()
    persona = json.loads((out / "persona" / "stats.json").read_text())["config"]
    assert persona["turns"]["context_turns"] == 2 and persona["val_fraction"] == 0.2
    sft = json.loads((out / "sft" / "config.json").read_text())
    assert (
        sft["adapt"]["lora_rank"] == 8  # the `adapt` section, nested in config.json
        and sft["adapt"]["base_dtype"] == "bf16"
        and sft["train"]["checkpoint_activations"]
        and sft["pack"]
    )
    step = resolve_checkpoint(out)
    assert (step / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()  # no token added
    report = (out / "report.md").read_text()
    assert "fine-tuned on your data" in report and "## Fine-tuning" in report
    metrics = json.loads((out / "persona-score" / "metrics.json").read_text())
    assert set(metrics["loss"]) == {"base", "everyone", "persona"}
    assert set(metrics["style"]) == {"real", "everyone", "persona"} and all(
        0 <= v <= 1 for v in metrics["style"].values()
    )
    assert "sound like the person" in report and "## How much like them" in report
