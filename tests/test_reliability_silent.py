"""Silently wrong, made loud or right: --resume with other settings, names in two Unicode forms, held-out rows that
are copies of training rows, labels that are one number written twice, a Telegram entity without text, an edited
source whose size and time were put back, a system prompt longer than the context, /save to a place that fails."""

import io
import json
import os
import sys

import pytest
import torch

from ownlm import cli
from ownlm.extract.telegram import flatten_text
from ownlm.finetune.classify_data import copies_of_training, same_numbers
from ownlm.finetune.persona import build_persona
from ownlm.model.checkpoint import save_model
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.pipeline import files_fingerprint
from ownlm.tokenizer import Tokenizer
from ownlm.tokenizer.chat import add_special_tokens

FAST = ["--threads", "1", "--dtype", "fp32", "--no-progress"]


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny random model whose tokenizer has ChatML's tokens (so `ownlm chat` takes it)."""
    tok = add_special_tokens(Tokenizer(special_tokens={"<|endoftext|>": 256}), ["<|im_start|>", "<|im_end|>"])
    torch.manual_seed(0)
    m = GPT(GPTConfig(vocab_size=tok.n_vocab, block_size=64, n_layer=1, n_head=2, n_embd=16)).eval()
    return save_model(tmp_path_factory.mktemp("chat") / "model", m, tok)


# ---------------------------------------------------------------------------------------------- --resume


def test_sft_resume_refuses_another_template_lora_rank_or_base(chat_model, tmp_path, capsys):
    data = tmp_path / "data.json"
    data.write_text(
        json.dumps([{"instruction": "say", "input": f"x{i}", "output": f"y {i}"} for i in range(30)])
    )
    out = tmp_path / "run"
    base = [
        "finetune",
        "sft",
        str(chat_model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--responses",
        "0",
        *FAST,
    ]
    assert cli.main([*base, "--max-iters", "1", "--lora-rank", "2", "--template", "chatml"]) == 0
    capsys.readouterr()
    other = tmp_path / "other"
    other.mkdir()
    for f in chat_model.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    for changed, word in [(["--lora-rank", "4", "--template", "chatml"], "--lora-rank 4"),
                          (["--lora-rank", "2", "--template", "alpaca"], "--template alpaca")]:  # fmt: skip
        assert cli.main([*base, "--max-iters", "2", "--resume", *changed]) == 2
        err = capsys.readouterr().err
        assert word in err and "the run has" in err and err.count("\n") == 1, err
    moved = [a if a != str(chat_model) else str(other) for a in base]
    assert cli.main([*moved, "--max-iters", "2", "--resume", "--lora-rank", "2", "--template", "chatml"]) == 2
    assert "BASE" in capsys.readouterr().err
    # the same settings resume
    assert cli.main([*base, "--max-iters", "2", "--resume", "--lora-rank", "2", "--template", "chatml"]) == 0


# ---------------------------------------------------------------------------------------------- names, labels, rows


def test_a_person_typed_in_one_unicode_form_finds_the_other():
    conv = {"id": "c", "messages": [{"name": "Bob", "time": "2024-01-01T10:00:00", "text": "Hi"},
                                    {"name": "Zoe\u0308", "time": "2024-01-01T10:01:00", "text": "Hey!"}]}  # fmt: skip
    train, _, _ = build_persona([conv], ["Zo\u00eb"], val_fraction=0)
    assert train[0]["messages"][-1] == {"role": "assistant", "content": "Hey!"}


def test_held_out_copies_of_training_rows_are_counted():
    train = [{"text": "win a prize", "label": "spam"}, {"text": "see you", "label": "ham"}]
    val = [{"text": "see you ", "label": "ham"}, {"text": "hello", "label": "ham"}]
    test = [{"text": "win a prize", "label": "spam"}] * 30 + [{"text": "new", "label": "spam"}]
    assert copies_of_training(train, {"validation": val, "test": test}) == {"validation": 1, "test": 30}


def test_classify_with_downsampling_says_when_held_out_rows_copy_training_rows(chat_model, tmp_path, capsys):
    from ownlm.config import parse_args
    from ownlm.finetune.classify import ClassifyConfig
    from ownlm.finetune.classify_data import prepare_splits

    rows = [("free prize now", "spam")] * 40 + [(f"meeting at {i}", "ham") for i in range(80)]
    rows += [(f"cheap offer {i}", "spam") for i in range(20)]
    (tmp_path / "d.csv").write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    cfg = parse_args(ClassifyConfig, [str(chat_model), "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "o"),
                                      "--balance", "downsample"], "p")  # fmt: skip
    train, val, test, _, info = prepare_splits(cfg)
    seen = {r["text"] for r in train}
    copies = {"validation": sum(r["text"] in seen for r in val), "test": sum(r["text"] in seen for r in test)}
    assert info["held_out_copies"] == copies and copies["test"] > 0
    assert "not held-out accuracy" in capsys.readouterr().err


def test_labels_that_are_one_number_written_twice_are_warned_about(chat_model, tmp_path, capsys):
    from ownlm.config import parse_args
    from ownlm.finetune.classify import ClassifyConfig
    from ownlm.finetune.classify_data import prepare_splits

    assert same_numbers(["1", "1.0", "0", "spam"]) == [["1", "1.0"]] and same_numbers(["a", "b"]) == []
    lines = [json.dumps({"text": f"row {i}", "label": [1, 1.0, 0][i % 3]}) for i in range(60)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    cfg = parse_args(
        ClassifyConfig,
        [str(chat_model), "--data", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "o")],
        "p",
    )
    prepare_splits(cfg)
    assert "'1', '1.0'" in capsys.readouterr().err


def test_a_telegram_entity_without_text_adds_nothing():
    assert flatten_text(["a", {"type": "mention", "text": None}, "b", {"type": "bold"}]) == "ab"
    assert flatten_text([{"type": "link", "text": ["x", {"text": "y"}]}]) == "xy"


def test_build_sees_an_edit_whose_size_and_time_were_put_back(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("hello world")
    st = f.stat()
    before = files_fingerprint([str(tmp_path)])
    f.write_text("HELLO WORLD")  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns
    assert files_fingerprint([str(tmp_path)]) != before


# ---------------------------------------------------------------------------------------------- chat


def _chat(monkeypatch, capsys, argv, stdin: str):
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = cli.main(argv)
    return code, capsys.readouterr()


def test_chat_save_to_a_bad_place_says_so_and_goes_on(chat_model, tmp_path, monkeypatch, capsys):
    code, out = _chat(monkeypatch, capsys, ["chat", str(chat_model), "--max-new-tokens", "3", "--seed", "1",
                                            "--device", "cpu"], f"hi\n/save /dev/null\nagain\n/save {tmp_path}/c.jsonl\n")  # fmt: skip
    assert code == 0 and "not saved" in out.err and "/dev/null" in out.err
    saved = json.loads((tmp_path / "c.jsonl").read_text())["messages"]
    assert [m["role"] for m in saved] == ["user", "assistant", "user", "assistant"]


def test_chat_says_when_the_system_prompt_does_not_fit(chat_model, monkeypatch, capsys):
    code, out = _chat(monkeypatch, capsys, ["chat", str(chat_model), "--max-new-tokens", "3", "--seed", "1",
                                            "--device", "cpu", "--system", "be brief " * 40], "hi\n")  # fmt: skip
    assert code == 0 and "system prompt" in out.err and "cut off" in out.err
