"""Classification fine-tuning: header detection, the head (padding, pooling, parity with the GPT), checkpoints
(plain, tied, LoRA), scores against scikit-learn, splits and balance, early stopping, the commands end to end,
the Python API, and bad input."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ownlm.cli import main
from ownlm.errors import UserError
from ownlm.extract.base import ExtractOptions, Source
from ownlm.extract.tabular import Table, TabularReader, has_header
from ownlm.finetune.classifier import Classifier, GPTClassifier, encode_text, pad_batch
from ownlm.finetune.classify import ClassBatches, ClassifyConfig, Encoded, adapt_classifier, class_weights
from ownlm.finetune.classify_data import downsample, open_records, split_rows
from ownlm.finetune.classify_report import confusion_matrix, scores
from ownlm.model.adapt import AdaptConfig
from ownlm.model.checkpoint import load_model, save_model
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.tokenizer import Tokenizer

SMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "sms_spam" / "SMSSpamCollection"
FAST = ["--threads", "1", "--dtype", "fp32", "--no-progress"]


def _gpt(seed=0, tie=False, pos="rope", block=64):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=320, block_size=block, n_layer=2, n_head=2, n_embd=32, pos=pos,
                         tie_embeddings=tie))  # fmt: skip


def _tok():
    return Tokenizer(special_tokens={"<|endoftext|>": 256})


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny random GPT with a byte-level tokenizer, and a trivially separable labelled set."""
    d = tmp_path_factory.mktemp("base")
    save_model(d / "model", _gpt(), _tok())
    rng = np.random.default_rng(0)
    with open(d / "toy.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(160):
            lab = ("pos", "neg")[i % 2]
            w.writerow(
                [
                    " ".join(rng.choice(["the", "a", "film", "was"], 3))
                    + (" good" if lab == "pos" else " bad"),
                    lab,
                ]
            )
    return d


# ---------------------------------------------------------------------------------------------- the table reader


def test_header_detection_on_typical_tables():
    assert has_header([["text", "label"], ["hello there", "pos"], ["bad", "neg"]])
    assert has_header(
        [["v1", "v2", "", ""], ["ham", "x" * 80], ["spam", "y" * 90], ["ham", "z" * 70], ["ham", "w" * 60]]
    )
    assert has_header([["review_body", "stars"], ["great", "5"], ["awful", "1"]])  # a name above numbers
    assert not has_header(
        [["ham", "see you at eight"], ["spam", "WIN a prize"], ["ham", "ok"], ["ham", "later"]]
    )
    assert not has_header([["great film", "1"], ["awful", "0"], ["fine", "1"]])  # a number is data
    assert not has_header([["a", "b"], ["a", "c"]])  # a value that reappears below is data
    assert not has_header([])


def test_headerless_tsv_keeps_its_first_row_in_extract_and_classify(tmp_path):
    rows = 'ham\tGo until jurong point, crazy\nham\tOk lar\nspam\tFree entry in 2 a wkly comp\nham\t"Hi" he said\n'
    docs = list(TabularReader().read(Source("sms.tsv", rows.encode()), ExtractOptions()))
    assert [d.text for d in docs] == ["Go until jurong point, crazy", "Ok lar", "Free entry in 2 a wkly comp",
                                      '"Hi" he said']  # fmt: skip
    (tmp_path / "sms").write_text(rows, encoding="utf-8")  # no extension, as the UCI file
    fields, records = open_records(tmp_path / "sms")
    assert fields == ["1", "2"] and [r["1"] for _, r in records] == ["ham", "ham", "spam", "ham"]
    assert list(Table(["text\n", "a\n"], "t.csv", ",", header=False)) == [(1, {"1": "text"}), (2, {"1": "a"})]


@pytest.mark.skipif(not SMS.is_file(), reason="shared SMS Spam Collection not present")
def test_the_real_sms_collection_reads_whole():
    fields, records = open_records(SMS)
    labels = [r["1"] for _, r in records]
    assert fields == ["1", "2"] and len(labels) == 5574
    assert labels.count("spam") == 747 and labels.count("ham") == 4827


# ---------------------------------------------------------------------------------------------- the head


@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_features_are_the_gpt_forward_without_its_head(pos):
    gpt = _gpt(pos=pos).eval()
    clf = GPTClassifier(gpt, 3).eval()
    x = torch.randint(0, 320, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(gpt.lm_head(clf.features(x)), gpt(x)[0])


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_prediction_does_not_change_with_padding(pool):
    clf = GPTClassifier(_gpt(), 2, pool).eval()
    rows = [[5, 6, 7, 8], [9, 10], [11]]
    alone = [clf(torch.tensor([r]))[0] for r in rows]
    b = pad_batch(rows + [list(range(20, 40))], pad_id=256)  # a long row pads the others by up to 19 tokens
    logits, _ = clf(torch.from_numpy(b["input_ids"]), torch.from_numpy(b["lengths"]))
    for i in range(3):
        torch.testing.assert_close(logits[i], alone[i][0], atol=1e-5, rtol=1e-5)
    x = torch.from_numpy(b["input_ids"][:3])
    other = x.clone()
    other[0, 4:], other[1, 2:], other[2, 1:] = 3, 4, 5  # different padding tokens, same real tokens
    torch.testing.assert_close(clf(x, torch.tensor([4, 2, 1]))[0], clf(other, torch.tensor([4, 2, 1]))[0])


def test_flops_leave_out_the_unused_language_model_head():
    gpt = _gpt()
    clf = GPTClassifier(gpt, 2)
    cfg = gpt.config
    assert gpt.flops_per_token(10) - clf.flops_per_token(10) == 6 * cfg.vocab_size * cfg.n_embd


def test_weighted_loss_is_the_weighted_sum():
    clf = GPTClassifier(_gpt(), 2)
    x, n, y = torch.randint(0, 256, (4, 6)), torch.tensor([6, 3, 2, 5]), torch.tensor([0, 1, 1, 0])
    logits, plain = clf(x, n, y)
    per = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    torch.testing.assert_close(plain, per.sum())
    w = torch.tensor([0.5, 3.0])
    torch.testing.assert_close(clf(x, n, y, weight=w)[1], (per * w[y]).sum())


@pytest.mark.parametrize("tie", [False, True])
def test_classifier_checkpoint_round_trip(tmp_path, tie):
    clf = GPTClassifier(_gpt(tie=tie), 3, "mean").eval()
    save_model(tmp_path / "c", clf, _tok())
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    assert meta["kind"] == "classifier" and meta["classifier"] == {"n_labels": 3, "pool": "mean"}
    back, tok, _ = load_model(tmp_path / "c", kinds=("classifier",))
    assert isinstance(back, GPTClassifier) and back.pool == "mean" and tok is not None
    if tie:
        assert back.gpt.lm_head.weight is back.gpt.transformer.wte.weight
    x = torch.randint(0, 320, (2, 9))
    torch.testing.assert_close(back(x)[0], clf(x)[0])
    with pytest.raises(Exception, match="kind 'classifier'"):
        load_model(tmp_path / "c")  # a language-model command refuses it


def test_lora_classifier_saves_adapters_and_head_and_loads_merged(tmp_path):
    clf = GPTClassifier(_gpt(), 2)
    cfg = ClassifyConfig(base="b", data="d", out="o", adapt=AdaptConfig(lora_rank=4))
    adapt_classifier(clf, cfg)
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("score.") for n in trainable)
    assert {"score.weight", "score.bias"} <= trainable
    with torch.no_grad():
        for n, p in clf.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # an adapter that changes something
    save_model(tmp_path / "c", clf, _tok())
    assert (tmp_path / "c" / "adapter.safetensors").is_file()
    back, _, _ = load_model(tmp_path / "c", kinds=("classifier",))
    x = torch.randint(0, 320, (2, 7))
    torch.testing.assert_close(back.eval()(x)[0], clf.eval()(x)[0], atol=1e-5, rtol=1e-4)


def test_partial_training_trains_the_head_and_last_blocks_only():
    clf = GPTClassifier(_gpt(tie=True), 2)
    adapt_classifier(clf, ClassifyConfig(base="b", data="d", out="o", adapt=AdaptConfig(train_layers="0")))
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert {"score.weight", "score.bias", "gpt.transformer.ln_f.weight"} <= trainable
    assert all(n.startswith(("score.", "gpt.transformer.ln_f.")) for n in trainable)  # no embedding, no block
    clf = GPTClassifier(_gpt(tie=False), 2)
    adapt_classifier(clf, ClassifyConfig(base="b", data="d", out="o", adapt=AdaptConfig(train_layers="1")))
    trainable = {n for n, p in clf.named_parameters() if p.requires_grad}
    assert any(n.startswith("gpt.transformer.h.1.") for n in trainable)
    assert all(n.startswith(("score.", "gpt.transformer.ln_f.", "gpt.transformer.h.1.")) for n in trainable)


def test_activation_checkpointing_in_the_classifier_gives_the_same_loss_and_gradients(monkeypatch):
    """--checkpoint-activations reaches the classifier's trunk (the Trainer's switch finds the GPT inside it): each
    block is recomputed in the backward pass, and the loss and every gradient are those of the plain pass."""
    from ownlm.train.trainer import checkpoint_activations

    calls = []
    plain = torch.utils.checkpoint.checkpoint
    monkeypatch.setattr(
        torch.utils.checkpoint, "checkpoint", lambda *a, **k: calls.append(1) or plain(*a, **k)
    )
    clf = GPTClassifier(_gpt(), 3).train()
    adapt_classifier(clf, ClassifyConfig(base="b", data="d", out="o", adapt=AdaptConfig(lora_rank=4)))
    x, n, y = torch.randint(0, 320, (3, 10)), torch.tensor([10, 4, 7]), torch.tensor([0, 2, 1])
    results = []
    for recompute in (False, True):
        if recompute:
            checkpoint_activations(clf)
        clf.zero_grad()
        loss = clf(x, n, y)[1]
        loss.backward()
        results.append(
            (loss.detach(), {k: p.grad.clone() for k, p in clf.named_parameters() if p.requires_grad})
        )
    assert (
        clf.gpt.checkpoint_activations and len(calls) == clf.gpt.config.n_layer
    )  # once per block, second pass
    torch.testing.assert_close(results[0][0], results[1][0])
    assert results[0][1].keys() == results[1][1].keys() and any("lora_" in k for k in results[0][1])
    for k in results[0][1]:
        torch.testing.assert_close(results[0][1][k], results[1][1][k], msg=k)


@pytest.mark.parametrize("dtype", ["bf16", "int8"])
def test_lora_classifier_on_a_bf16_or_int8_base_trains(base, tmp_path, dtype):
    """--base-dtype bf16 with LoRA: the frozen trunk is stored in bf16 (the run goes to bf16 autocast by itself),
    the adapters and the new head stay fp32, validation loss falls, the test split is scored and the saved
    classifier loads and predicts; without frozen weights the flag is refused."""
    out = tmp_path / "run"
    args = ["finetune", "classify", str(base / "model"), "--data", str(base / "toy.csv"), "--out", str(out),
            "--max-iters", "40", "--lr", "1e-2", "--evals", "2", "--lora-rank", "4", "--lora-targets", "all",
            "--base-dtype", dtype, "--checkpoint-activations", "--threads", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["val_loss"] < records[0]["val_loss"]
    assert json.loads((out / "config.json").read_text())["train"]["dtype"] == "bf16"
    step = out / (out / "latest").read_text().strip()
    from safetensors.torch import load_file

    weights, adapter = load_file(step / "model.safetensors"), load_file(step / "adapter.safetensors")
    assert weights["gpt.transformer.h.0.attn.c_attn.weight"].dtype == getattr(
        torch, {"bf16": "bfloat16"}.get(dtype, dtype)
    )
    assert weights["score.weight"].dtype == torch.float32
    assert adapter and all(v.dtype == torch.float32 for v in adapter.values())
    assert 0 <= json.loads((out / "metrics.json").read_text())["test_accuracy"] <= 1
    assert len(Classifier.load(out).predict(["the good", "a bad"])) == 2
    refused = ["finetune", "classify", str(base / "model"), "--data", str(base / "toy.csv"), "--out",
               str(tmp_path / "full"), "--base-dtype", "bf16", "--max-iters", "2", *FAST]  # fmt: skip
    assert main(refused) == 2 and not (tmp_path / "full").exists()


# ---------------------------------------------------------------------------------------------- scores, splits


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=60))
def test_scores_match_scikit_learn(pairs):
    metrics = pytest.importorskip("sklearn.metrics")
    y, p = zip(*pairs)
    s = scores(confusion_matrix(y, p, 3), ["a", "b", "c"])
    assert s["accuracy"] == pytest.approx(metrics.accuracy_score(y, p))
    assert s["macro_f1"] == pytest.approx(
        metrics.f1_score(y, p, average="macro", labels=[0, 1, 2], zero_division=0)
    )
    prec = metrics.precision_score(y, p, average=None, labels=[0, 1, 2], zero_division=0)
    rec = metrics.recall_score(y, p, average=None, labels=[0, 1, 2], zero_division=0)
    assert [s["per_class"][k]["precision"] for k in "abc"] == pytest.approx(list(prec))
    assert [s["per_class"][k]["recall"] for k in "abc"] == pytest.approx(list(rec))
    assert confusion_matrix(y, p, 3).tolist() == metrics.confusion_matrix(y, p, labels=[0, 1, 2]).tolist()


def test_downsample_split_and_weights():
    rows = [{"text": str(i), "label": "ham" if i % 5 else "spam"} for i in range(100)]
    kept = downsample(rows, seed=1)
    assert [r["label"] for r in kept].count("ham") == [r["label"] for r in kept].count("spam") == 20
    assert downsample(rows, seed=1) == kept and downsample(rows, seed=2) != kept
    train, val, test = split_rows(kept, 0.1, 0.2, seed=3)
    assert (len(train), len(val), len(test)) == (28, 4, 8)  # int(40 * 0.7), int(40 * 0.1), the rest
    assert sorted(r["text"] for r in train + val + test) == sorted(r["text"] for r in kept)
    w = class_weights(np.array([0] * 80 + [1] * 20), 2)
    assert w == pytest.approx([0.625, 2.5]) and 80 * w[0] == pytest.approx(20 * w[1])


def test_batches_are_pure_functions_of_seed_and_index_and_processes_split_them():
    enc = Encoded([[i] * (1 + i % 5) for i in range(50)], np.arange(50) % 3)
    a, b = ClassBatches(enc, 4, 0, seed=1), ClassBatches(enc, 4, 0, seed=1)
    order = [0, 30, 5, 13, 30]
    first = [a.batch(i)["input_ids"] for i in order]
    second = {i: b.batch(i)["input_ids"] for i in reversed(order)}  # asked in another order: the same batches
    assert all((x == second[i]).all() for x, i in zip(first, order))
    epoch = [int(r[0]) for i in range(12) for r in a.batch(i)["input_ids"]]  # 12 full batches of epoch 0
    assert len(set(epoch)) == 48  # no example twice within an epoch
    one = ClassBatches(enc, 4, 0, seed=1)
    r0, r1 = ClassBatches(enc, 2, 0, 1, rank=0, world=2), ClassBatches(enc, 2, 0, 1, rank=1, world=2)
    for i in (0, 7, 20):
        assert (
            one.batch(i)["labels"].tolist() == r0.batch(i)["labels"].tolist() + r1.batch(i)["labels"].tolist()
        )


def test_truncation_rule():
    tok = _tok()
    assert encode_text(tok, "abcdef", 10) == (list(b"abcdef"), False)
    assert encode_text(tok, "abcdef", 3) == (list(b"abc"), True)
    assert encode_text(tok, "abcdef", 3, "left") == (list(b"def"), True)


# ---------------------------------------------------------------------------------------------- the commands


def test_finetune_classify_end_to_end_cli_and_python(base, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["finetune", "classify", str(base / "model"), "--data", str(base / "toy.csv"), "--out", str(out),
            "--text-field", "review", "--label-field", "sentiment", "--max-iters", "60", "--lr", "3e-3",
            "--evals", "3", *FAST]  # fmt: skip
    assert main(args) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_accuracy"] == 1.0 and m["test_macro_f1"] == 1.0 and m["labels"] == ["neg", "pos"]
    assert sum(map(sum, m["test"]["confusion"])) == m["data"]["test"] == 160 - 112 - 16
    for name in ("report.md", "confusion.png", "curves.png", "data.json"):
        assert (out / name).is_file()
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("val_accuracy" in r and "train_accuracy" in r for r in records)
    labels = json.loads((out / (out / "latest").read_text().strip() / "labels.json").read_text())
    assert labels["labels"] == ["neg", "pos"]
    capsys.readouterr()
    assert main(["classify", str(out), "a film was good", "the film bad"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [x.split("\t")[0] for x in lines] == ["pos", "neg"] and "neg=" in lines[0] and "pos=" in lines[0]
    clf = Classifier.load(out)
    assert clf.predict(["the good", "a bad"]) == ["pos", "neg"]
    p = clf.predict_proba(["the good"])
    assert p.shape == (1, 2) and p.sum() == pytest.approx(1.0, abs=1e-5)
    # --file: a new column, every row, written whole
    assert (
        main(["classify", str(out), "--file", str(base / "toy.csv"), "--out", str(tmp_path / "o.csv")]) == 0
    )
    with open(tmp_path / "o.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 160 and all(r["predicted"] == r["sentiment"] for r in rows)
    (tmp_path / "texts.csv").write_text("review\nthe good\na bad\n")  # one column: texts only
    assert (
        main(["classify", str(out), "--file", str(tmp_path / "texts.csv"), "--out", str(tmp_path / "t.csv")])
        == 0
    )
    assert (tmp_path / "t.csv").read_text().splitlines()[1].startswith("the good,pos,")
    (tmp_path / "in.jsonl").write_text('{"review": "was good"}\n{"review": "bad"}\n')
    assert main(["classify", str(out), "--file", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "o.jsonl"),
                 "--column", "y"]) == 0  # fmt: skip
    got = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [g["y"] for g in got] == ["pos", "neg"] and all(0.5 < g["y_p"] <= 1 for g in got)


def test_headerless_columns_by_number_balance_weights_and_truncation(base, tmp_path):
    rows = [("spam" if i % 4 == 0 else "ham", ("WIN cash now " if i % 4 == 0 else "see you ") + "x" * (i % 90))
            for i in range(120)]  # fmt: skip
    (tmp_path / "sms.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in rows), encoding="utf-8")
    out = tmp_path / "run"
    args = ["finetune", "classify", str(base / "model"), "--data", str(tmp_path / "sms.tsv"), "--out", str(out),
            "--text-field", "2", "--label-field", "1", "--balance", "weights", "--max-length", "40",
            "--max-iters", "40", "--lr", "3e-3", "--evals", "2", *FAST]  # fmt: skip
    assert main(args) == 0
    data = json.loads((out / "data.json").read_text())
    assert data["read"] == 120 and data["class_weights"][1] > data["class_weights"][0]  # spam is rarer
    expected_cut = sum(len(b.encode()) > 40 for _, b in rows)
    assert data["truncated"] == expected_cut > 0 and data["max_length"] == 40


def test_patience_stops_early_with_a_checkpoint(base, tmp_path):
    out = tmp_path / "run"
    args = ["finetune", "classify", str(base / "model"), "--data", str(base / "toy.csv"), "--out", str(out),
            "--max-iters", "200", "--eval-interval", "5", "--lr", "0", "--min-lr", "0", "--patience", "2", *FAST]  # fmt: skip
    assert main(args) == 0  # with lr 0 the validation loss never improves: stop after 1 + 2 evaluations
    m = json.loads((out / "metrics.json").read_text())
    assert m["stopped_early"] and m["steps"] == 15
    # the first evaluation stays the best (later ones only equal it): the run ends on it
    assert m["checkpoint_step"] == 5 and (out / "latest").read_text().strip() == "step_000005"
    assert (out / "step_000015").is_dir() and "kept is step 5 (the lowest validation loss)" in (
        out / "report.md"
    ).read_text()
    last = tmp_path / "last"
    assert main([*args[:6], str(last), *args[7:], "--no-restore-best"]) == 0
    assert json.loads((last / "metrics.json").read_text())["checkpoint_step"] == 15
    assert (last / "latest").read_text().strip() == "step_000015"


def test_restore_best_ends_on_the_lowest_validation_loss(base, tmp_path):
    rng = np.random.default_rng(1)  # labels unrelated to the texts: training overfits, validation loss climbs
    words = ["the", "a", "film", "was", "good", "bad", "plot", "long"]

    def table(path, n):
        rows = [(" ".join(rng.choice(words, 4)) + f" {i}", str(rng.choice(["pos", "neg"]))) for i in range(n)]
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([("review", "sentiment"), *rows])
        return rows

    table(tmp_path / "train.csv", 120)
    test_rows = table(tmp_path / "test.csv", 30)
    out = tmp_path / "run"
    args = ["finetune", "classify", str(base / "model"), "--data", str(tmp_path / "train.csv"), "--out", str(out),
            "--test-data", str(tmp_path / "test.csv"), "--max-iters", "40", "--eval-interval", "5", "--lr", "0.03",
            "--warmup-iters", "0", "--keep-checkpoints", "2", *FAST]  # fmt: skip
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = min((r for r in records if r["step"] > 0), key=lambda r: r["val_loss"])
    assert (
        best["step"] < 30
    )  # the data makes the best evaluation an early one, pruned but for the `best` file
    m = json.loads((out / "metrics.json").read_text())
    assert m["checkpoint_step"] == best["step"] and m["val_accuracy"] == best["val_accuracy"]
    assert (
        (out / "latest").read_text().strip()
        == (out / "best").read_text().strip()
        == f"step_{best['step']:06d}"
    )
    assert sorted(p.name for p in out.glob("step_*")) == [
        f"step_{best['step']:06d}",
        "step_000035",
        "step_000040",
    ]
    # the kept model is the one scored on the test split
    pred = Classifier.load(out).predict([text for text, _ in test_rows])
    assert np.mean([p == label for p, (_, label) in zip(pred, test_rows)]) == pytest.approx(
        m["test_accuracy"]
    )
    # --resume continues from the newest step (named in `last`), not from the restored best one
    assert (out / "last").read_text().strip() == "step_000040"
    i = args.index("--max-iters")
    assert main([*args[:i], "--max-iters", "50", *args[i + 2 :], "--resume"]) == 0
    after = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in after] == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert after[: len(records)] == records  # the first 40 steps' records stand


def test_trainer_should_stop_hook(tmp_path):
    from ownlm.train.config import TrainingConfig
    from ownlm.train.trainer import Task, Trainer

    class Tiny(Task):  # next-token loss on fixed rows; asks to stop after its second evaluation
        evals = 0

        def batch(self, i):
            rows = np.random.default_rng([1, i]).integers(0, 60, size=(2, 9))
            return {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}

        def count(self, b):
            return b["labels"].size

        def loss(self, model, b):
            return model(b["input_ids"], b["labels"], reduction="sum")[1]

        def evaluate(self, model, ctx):
            self.evals += 1
            return {"val_loss": 1.0}

        def should_stop(self):
            return self.evals >= 2

    cfg = TrainingConfig(max_iters=50, eval_interval=4, checkpoint_interval=100, threads=1, dtype="fp32",
                         progress=False)  # fmt: skip
    task = Tiny()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=16))
    summary = Trainer(model, cfg, task, tmp_path / "r").fit()
    assert summary["stopped_early"] and summary["step"] == 8 and task.evals == 2
    assert (
        tmp_path / "r" / "latest"
    ).read_text().strip() == "step_000008"  # saved though not a checkpoint step


# ---------------------------------------------------------------------------------------------- bad input


def _bad(base, tmp_path, capsys, name, text, *extra):
    (tmp_path / name).write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    code = main(["finetune", "classify", str(base / "model"), "--data", str(tmp_path / name), "--out", str(out),
                 "--max-iters", "2", *FAST, *extra])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and not out.exists()
    return err[0]


def test_bad_input_is_one_line_exit_2_and_nothing_written(base, tmp_path, capsys):
    good = "".join(f"{'pos' if i % 2 else 'neg'},text {i}\n" for i in range(40))
    msg = _bad(base, tmp_path, capsys, "a.csv", "label,text\n" + good + "pos,\nneg,more\n")
    assert "a.csv:42" in msg and "no text" in msg
    msg = _bad(base, tmp_path, capsys, "b.csv", "label,text\n" + "".join(f"pos,t{i}\n" for i in range(30)))
    assert "b.csv" in msg and "'pos'" in msg and "two labels" in msg
    msg = _bad(base, tmp_path, capsys, "c.csv", "label;text\n" + good.replace(",", ";"), "--delimiter", "tab")
    assert "c.csv" in msg and "delimiter" in msg
    msg = _bad(base, tmp_path, capsys, "f.tsv", "label,text\n" + good)  # commas in a .tsv
    assert "f.tsv" in msg and "split on a tab" in msg
    (tmp_path / "test.csv").write_text("label,text\npos,x\nmaybe,y\n", encoding="utf-8")
    msg = _bad(
        base, tmp_path, capsys, "d.csv", "label,text\n" + good, "--test-data", str(tmp_path / "test.csv")
    )
    assert "test.csv:3" in msg and "'maybe'" in msg and "never in the training split" in msg
    msg = _bad(base, tmp_path, capsys, "e.jsonl", '{"text": "a", "label": "x"}\n{"text": "b"}\n')
    assert "e.jsonl:2" in msg and "no label" in msg


@pytest.mark.parametrize("how", [["--lora-rank", "4"], ["--train-layers", "1"], []])
def test_runs_resume_and_classify(base, tmp_path, capsys, how):
    out = tmp_path / "run"
    args = ["finetune", "classify", str(base / "model"), "--data", str(base / "toy.csv"), "--out", str(out),
            *how, "--lr", "3e-3", "--evals", "1", *FAST]  # fmt: skip
    assert main([*args, "--max-iters", "10"]) == 0
    step = out / "step_000010"
    assert (step / "adapter.safetensors").is_file() == bool(how and how[0] == "--lora-rank")
    assert (step / "labels.json").is_file()
    assert json.loads((step / "config.json").read_text())["kind"] == "classifier"
    assert main([*args, "--max-iters", "20", "--resume"]) == 0
    assert (out / "latest").read_text().strip() == "step_000020"
    state = json.loads((out / "step_000020" / "state.json").read_text())
    assert state["step"] == 20
    capsys.readouterr()
    assert main(["classify", str(out), "the film was good"]) == 0
    assert capsys.readouterr().out.split("\t")[0] in ("pos", "neg")
    assert (
        main(["finetune", "sft", str(out), "--data", str(base / "toy.csv"), "--out", str(tmp_path / "s")])
        == 2
    )
    assert "kind 'classifier'" in capsys.readouterr().err  # a language-model command refuses a classifier


def test_a_row_with_more_fields_than_the_header_is_refused_with_its_line(base, tmp_path, capsys):
    rows = "text,label\n" + "".join(f"good film {i},pos\nbad film {i},neg\n" for i in range(20))
    err = _bad(base, tmp_path, capsys, "extra.csv", rows + "a bad, long film,neg\n")
    assert "extra.csv:42:" in err and "3 fields, but the header names 2" in err and "quote" in err
    from ownlm.finetune.classify_data import open_records

    (tmp_path / "texts.csv").write_text(
        "review\nthe good\na bad, sad film\n"
    )  # what `ownlm classify --file` reads
    fields, records = open_records(tmp_path / "texts.csv", min_columns=1)
    with pytest.raises(UserError, match=r"texts.csv:3: 2 fields, but the header names 1"):
        list(records)
