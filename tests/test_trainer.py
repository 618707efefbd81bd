"""The Trainer's budgets, schedule and cadence, its progress lines, run folders, and the nested config sections."""

import json
import math

import numpy as np
import pytest
import torch

from ownlm.cli import main
from ownlm.config import build_parser, from_dict, parse_args, to_dict
from ownlm.errors import UserError
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.model.run import RunFolder
from ownlm.report import verdict
from ownlm.train.config import PretrainingConfig, TrainingConfig
from ownlm.train.pretrain import PretrainConfig
from ownlm.train.trainer import Task, Trainer


class ToyTask(Task):
    """Next-token prediction on a fixed random sequence; batch i depends only on i."""

    def __init__(self, T=16, B=4):
        self.T, self.B = T, B
        self.data = np.random.default_rng(0).integers(0, 60, size=4000)

    def batch(self, index):
        starts = np.random.default_rng([1, index]).integers(0, len(self.data) - self.T - 1, self.B)
        rows = np.stack([self.data[s : s + self.T + 1] for s in starts])
        return {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}

    def count(self, batch):
        return batch["labels"].size

    def loss(self, model, batch):
        return model(batch["input_ids"], batch["labels"], reduction="sum")[1]

    def evaluate(self, model, ctx):
        b = ctx.to_device(self.batch(10_000))
        return {"val_loss": (model(b["input_ids"], b["labels"])[1]).item()}


def _model():
    # no biases: a key bias has an exactly-zero gradient in theory, and Adam would turn its rounding noise into
    # full-size updates that differ between two orders of summation
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, block_size=16, n_layer=1, n_head=2, n_embd=32, bias=False))


def _cfg(**kw):
    return TrainingConfig(
        **{"dtype": "fp32", "progress": False, "threads": 1, "lr": 1e-2, "min_lr": 1e-3, **kw}
    )


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_a_step_budget_gets_warm_up_decay_and_evaluations_spread_over_it(tmp_path):
    Trainer(_model(), _cfg(max_iters=40), ToyTask(), tmp_path / "run").fit()
    rows = _metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == list(range(4, 41, 4))  # 10 evaluations, the last one closes the run
    state = json.loads((tmp_path / "run" / "step_000040" / "state.json").read_text())
    assert state["warmup_steps"] == 2  # 5 % of 40
    assert rows[-1]["lr"] == pytest.approx(1e-3, rel=0.05)  # decayed to min_lr by the end
    assert rows[0]["lr"] > rows[-1]["lr"]


def test_a_time_budget_warms_up_within_it_and_evaluates_more_than_once(tmp_path, trainer_clock):
    # the clock advances per reading, not with the machine's speed: the run's length in steps is the same
    # on every machine, so each check below holds always (not only "if the machine managed 40 steps")
    summary = Trainer(_model(), _cfg(max_minutes=0.08), ToyTask(), tmp_path / "run").fit()
    rows = _metrics(tmp_path / "run")
    state = json.loads(
        (tmp_path / "run" / (tmp_path / "run" / "latest").read_text().strip() / "state.json").read_text()
    )
    assert summary["status"] == "done" and rows[-1]["step"] == summary["step"]  # an evaluation closes the run
    assert summary["step"] >= 40
    assert len(rows) >= 5
    assert state["warmup_steps"] < summary["step"] / 5  # warm-up ended early in the run, not after it
    assert max(r["lr"] for r in rows) > 5e-3 and rows[-1]["lr"] < 5e-3


def test_a_token_budget_counts_tokens(tmp_path):
    Trainer(_model(), _cfg(max_tokens=64 * 10), ToyTask(), tmp_path / "run").fit()  # 64 tokens per step
    assert _metrics(tmp_path / "run")[-1]["tokens"] == 640


def test_accumulation_and_batch_size_give_the_same_step(tmp_path):
    """grad_accum x 2 half-batches computes the step of one full batch (loss normalised by loss tokens)."""

    class Half(ToyTask):
        def batch(self, index):
            full = ToyTask.batch(self, index // 2)
            half = slice(0, 2) if index % 2 == 0 else slice(2, 4)
            return {k: v[half] for k, v in full.items()}

    a, b = _model(), _model()
    Trainer(a, _cfg(max_iters=3, eval_interval=3, grad_clip=0.0), ToyTask(), tmp_path / "a").fit()
    Trainer(b, _cfg(max_iters=3, eval_interval=3, grad_clip=0.0, grad_accum=2), Half(), tmp_path / "b").fit()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4, msg=n)


def test_progress_lines_when_output_is_not_a_terminal(tmp_path, capsys):
    cfg = TrainingConfig(dtype="fp32", threads=1, max_iters=30, log_seconds=0.0)
    Trainer(_model(), cfg, ToyTask(), tmp_path / "run").fit()
    out = capsys.readouterr().out
    assert "step 30/~30 (100%)" in out and "tok/s" in out


def test_frozen_models_and_busy_folders_are_clear_errors(tmp_path):
    model = _model()
    model.requires_grad_(False)
    with pytest.raises(UserError, match="frozen"):
        Trainer(model, _cfg(max_iters=2), ToyTask(), tmp_path / "run").fit()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="other files"), RunFolder(tmp_path / "mine").claim(resume=False):
        pass
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with (
        RunFolder(tmp_path / "r").claim(resume=False),
        pytest.raises(UserError, match="pid"),
    ):  # a second holder
        with RunFolder(tmp_path / "r").claim(resume=False):
            pass


def test_sections_flatten_into_flags_and_nest_in_config_json(tmp_path):
    cfg = parse_args(PretrainConfig, ["--data", "d", "--out", "o", "--max-iters", "7", "--n-layer", "3"], "p")
    assert cfg.train.max_iters == 7 and cfg.model.n_layer == 3 and cfg.train.lr == TrainingConfig().lr
    d = to_dict(cfg)
    assert d["train"]["max_iters"] == 7 and d["model"]["n_layer"] == 3 and "max_iters" not in d
    assert from_dict(PretrainConfig, json.loads(json.dumps(d))) == cfg  # config.json reads back the same
    toml = tmp_path / "c.toml"
    toml.write_text('data = "d"\nout = "o"\nlr = 0.5\n[train]\nmax_iters = 9\nseed = 3\n')
    cfg = parse_args(PretrainConfig, ["--config", str(toml), "--seed", "4"], "p")
    assert (cfg.train.max_iters, cfg.train.lr, cfg.train.seed) == (9, 0.5, 4)  # the flag wins over the file
    help_text = build_parser(PretrainConfig, "p").format_help()
    assert "training: budget" in help_text and "--max-minutes" in help_text
    with pytest.raises(UserError, match="unknown setting"):
        from_dict(PretrainConfig, {"data": "d", "out": "o", "train": {"max_itrs": 3}})


def test_build_and_pretrain_share_one_training_section():
    from ownlm.pipeline import BuildConfig

    for cls in (PretrainConfig, BuildConfig):
        hints = {f: t for f, t in cls.__annotations__.items()}
        assert hints["train"] in ("PretrainingConfig", PretrainingConfig)
    assert issubclass(PretrainingConfig, TrainingConfig)  # the fine-tuning section, plus --batch-tokens


def test_a_command_offers_only_the_flags_it_uses():
    from ownlm.finetune.classify import ClassifyConfig
    from ownlm.finetune.sft import SFTConfig

    assert "--batch-tokens" in build_parser(PretrainConfig, "p").format_help()
    for cls in (SFTConfig, ClassifyConfig):  # rows of varying length: no fixed tokens per step
        assert "--batch-tokens" not in build_parser(cls, "f").format_help()
        assert "--grad-accum" in build_parser(cls, "f").format_help()


def test_patience_is_run_state_and_a_resumed_run_stops_where_an_unbroken_one_does(tmp_path):
    """The Trainer keeps everything a resumed run continues from in one RunState, written whole to state.json
    (nothing beside its fields) — the patience counter too: with a rate of 0 the validation loss never improves,
    so --patience 3 stops at the fourth evaluation, whether or not the run was interrupted after the second."""
    from ownlm.model.run import RunState, read_state

    cfg = dict(lr=0.0, min_lr=0.0, eval_interval=2)
    whole = Trainer(_model(), _cfg(max_iters=40, **cfg), ToyTask(), tmp_path / "a", patience=3).fit()
    assert whole["stopped_early"] and whole["step"] == 8
    first = Trainer(_model(), _cfg(max_iters=4, **cfg), ToyTask(), tmp_path / "b", patience=3).fit()
    state = read_state(tmp_path / "b" / "step_000004")
    raw = json.loads((tmp_path / "b" / "step_000004" / "state.json").read_text())
    assert state.other == {} and RunState.from_dict(raw).to_dict() == raw  # the dataclass, whole
    assert first["step"] == 4 and state.evals_since_best == 1 and state.step == 4
    resumed = Trainer(_model(), _cfg(max_iters=40, **cfg), ToyTask(), tmp_path / "b", patience=3,
                      resume=RunFolder(tmp_path / "b").read_state()).fit()  # fmt: skip
    assert resumed["stopped_early"] and resumed["step"] == 8
    strip = lambda rows: [(r["step"], r["val_loss"], r["lr"]) for r in rows]  # noqa: E731
    assert strip(_metrics(tmp_path / "b")) == strip(_metrics(tmp_path / "a"))


def test_resume_refuses_a_changed_model_flag(tmp_path, capsys):
    from ownlm.data.encode import EncodeConfig, encode_corpus
    from ownlm.tokenizer import Tokenizer

    Tokenizer(special_tokens={"<|endoftext|>": 256}).save(tmp_path / "tok")
    (tmp_path / "t.txt").write_text("the cat sat on the mat. " * 400)
    encode_corpus(EncodeConfig(corpus=[str(tmp_path / "t.txt")], tokenizer=str(tmp_path / "tok"),
                               out=str(tmp_path / "tokens"), progress=False))  # fmt: skip
    args = ["pretrain", "--data", str(tmp_path / "tokens"), "--out", str(tmp_path / "run"), "--n-layer", "1",
            "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "2", "--max-iters", "3",
            "--dtype", "fp32", "--samples", "0", "--no-progress", "--threads", "1"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--n-embd", "64", "--resume"]) == 2
    assert "--n-embd 64 (the run has 32)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("bpb", "tokens", "expect"),
    [(3.6, 100, "close to where training started"), (1.8, 100, "spelling of frequent words"),
     (1.1, 5000, "correctly spelled")],
)  # fmt: skip
def test_report_wording_follows_the_measured_score(bpb, tokens, expect):
    metrics = [{"step": 1, "val_bpb": bpb + 1.0, "tokens": 10}, {"step": 2, "val_bpb": bpb, "tokens": tokens}]
    text = verdict(metrics, {"splits": {"train": {"tokens": 1000}}})
    assert expect in text
    assert ("too short for this data" in text) == (tokens < 1000)
    flat = verdict([{"val_bpb": 2.5, "tokens": 1}, {"val_bpb": 2.5, "tokens": 2}], {})
    assert "did not go down" in flat
    assert math.isfinite(bpb)


def test_the_adapt_section_is_declared_once_and_nested_by_every_fine_tuning_command():
    import ast
    from dataclasses import MISSING, fields
    from pathlib import Path

    import ownlm
    from ownlm.finetune.classify import ClassifyConfig
    from ownlm.finetune.dpo import DPOConfig
    from ownlm.finetune.sft import SFTConfig
    from ownlm.model.adapt import AdaptConfig
    from ownlm.model.lora import LoRAConfig
    from ownlm.pipeline import BuildConfig

    names = {f.name for f in fields(AdaptConfig)}
    declared = [
        f"{path.name}:{node.target.id}"
        for path in Path(ownlm.__file__).parent.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id in names
    ]
    assert sorted(declared) == sorted(f"adapt.py:{n}" for n in names)  # lora_rank has one definition
    for cls in (SFTConfig, ClassifyConfig, DPOConfig, BuildConfig):
        assert {f.name: f.type for f in fields(cls)}["adapt"] in ("AdaptConfig", AdaptConfig)
        assert "--lora-rank" in build_parser(cls, "x").format_help()
    assert {f.name: f.default for f in fields(LoRAConfig)}["rank"] is MISSING  # one default: 0, off
    assert LoRAConfig(rank=4).alpha == AdaptConfig().lora_alpha
    cfg = parse_args(SFTConfig, ["base", "--data", "d", "--out", "o", "--lora-rank", "4"], "sft")
    assert cfg.adapt.lora_rank == 4 and to_dict(cfg)["adapt"]["lora_rank"] == 4
    assert (
        from_dict(SFTConfig, {"base": "b", "out": "o", "lora_rank": 2}).adapt.lora_rank == 2
    )  # flat keys too


def test_shared_sections_are_nested_not_copied():
    """A settings section several commands share is one dataclass nested by each (flat flags, the same names),
    never its fields copied; --base-dtype and --checkpoint-activations each have one definition in src."""
    import ast
    from dataclasses import fields
    from pathlib import Path

    import ownlm
    from ownlm.finetune.classify import ClassifyConfig
    from ownlm.finetune.dpo import DPOConfig
    from ownlm.finetune.persona import PersonaConfig, TurnsConfig
    from ownlm.finetune.sft import ChatConfig, SFTConfig
    from ownlm.model.adapt import AdaptConfig
    from ownlm.pipeline import BuildConfig
    from ownlm.tokenizer.cli import BPEConfig
    from ownlm.tokenizer.cli import TrainConfig as TokenizerTrainConfig

    users = {AdaptConfig: (SFTConfig, ClassifyConfig, DPOConfig, BuildConfig), ChatConfig: (SFTConfig, DPOConfig),
             TurnsConfig: (PersonaConfig, BuildConfig), BPEConfig: (TokenizerTrainConfig, BuildConfig),
             TrainingConfig: (SFTConfig, ClassifyConfig, DPOConfig, PretrainConfig, BuildConfig)}  # fmt: skip
    for section, commands in users.items():
        names = {f.name for f in fields(section)}
        for cls in commands:
            own = {f.name: f.type for f in fields(cls)}
            assert not names & set(own), (cls.__name__, names & set(own))  # no field copied
            assert any(t in (section, section.__name__) or t == "PretrainingConfig" for t in own.values())
            help_text = build_parser(cls, "x").format_help()
            assert all(f"--{n.replace('_', '-')}" in help_text for n in names), cls.__name__  # flat flags
    declared = [
        f"{path.name}:{node.target.id}"
        for path in Path(ownlm.__file__).parent.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        and node.target.id in ("base_dtype", "checkpoint_activations")
    ]  # fmt: skip
    assert sorted(declared) == ["adapt.py:base_dtype", "config.py:checkpoint_activations"]


def test_every_training_command_runs_through_the_driver_with_one_budget_default(tmp_path):
    import ast
    from pathlib import Path

    import ownlm
    from ownlm.train import driver

    root = Path(ownlm.__file__).parent
    # the budget fields are declared once (the `train` section) and no command keeps its own fallback
    declared = [
        f"{path.relative_to(root)}:{node.target.id}"
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
        and node.target.id in ("epochs", "max_iters", "batch_tokens")
    ]  # fmt: skip
    assert sorted(declared) == [
        "train/config.py:batch_tokens",
        "train/config.py:epochs",
        "train/config.py:max_iters",
    ]
    for module in ("train/pretrain.py", "finetune/sft.py", "finetune/classify.py", "finetune/dpo.py"):
        text = (root / module).read_text(encoding="utf-8")
        assert "run_training(" in text and "Trainer(" not in text and ".claim(" not in text, module
    assert driver.DEFAULT_EPOCHS == 2.0
    with pytest.raises(ValueError, match="needs a budget"):  # the Trainer has no default of its own
        Trainer(_model(), _cfg(), ToyTask(), tmp_path / "run").fit()
