"""SFT speed and memory: ``ownlm finetune sft``'s training path against Hugging Face transformers (+ peft).

The same work on both sides: the 1,100 examples of ``instruction-data.json`` rendered with the Alpaca template and
encoded with GPT-2's tokenizer (``ownlm.tokenizer.export.from_gpt2``; each side is fed the same ids and loss masks, labels
-100 outside the responses), the same batches (``SFTBatches``: batch size 8, length bucketing, padded to the
longest row, at most ``--max-length`` tokens), a GPT-2-shaped model with random weights of the same shape
(``mini``: 6 layers, 6 heads, 384 wide; ``gpt2``: the 124M shape; GPT-2's 50,257-token vocabulary, tied
embeddings, dropout 0), the same dtype and thread count, AdamW with gradient clipping at 1.0, and the loss summed
over response tokens and divided by their count.

- ownlm: the model, ``SFTTask`` and the ``Trainer`` that ``ownlm finetune sft`` runs (LoRA: ``apply_lora``,
  rank 8, alpha 16, targets ``attn`` = ``attn.c_attn`` + ``attn.c_proj``).
- peer: ``transformers.GPT2LMHeadModel`` in a plain PyTorch loop, with the attention mask a data collator gives
  (1 on real tokens, 0 on padding); LoRA through ``peft`` on the same two layers, same rank and alpha.

Every (side, shape, mode) runs in its own process: peak memory is that process' RSS high-water mark
(``VmHWM``, read right after the last timed step). Tokens/s counts real tokens (padding excluded) over the
timed steps; the first ``--warmup`` steps are not timed.

    python bench/bench_sft_speed.py                              # mini + gpt2 shapes, full and LoRA
    python bench/bench_sft_speed.py --shapes mini --steps 20 --threads 2
    python bench/bench_sft_speed.py --base smol/ --threads 2     # an imported model, LoRA, on its own weights

``--base DIR`` (an ``ownlm import`` folder, e.g. SmolLM2-135M-Instruct) measures LoRA fine-tuning of that model's
real weights instead (shape ``base``, mode ``lora``): the examples rendered with the model's own chat template and
tokenizer; ownlm with the settings ``ownlm build --base`` gives its fine-tuning stages (``_pretrained.base_flags``:
LoRA rank 8 on the attention projections, the frozen weights in bf16, activation checkpointing, bf16 autocast) but
padded batches instead of packed rows, so that the peer gets the very same batches; the peer is
``LlamaForCausalLM`` loaded in bf16 from ``ownlm export --to hf`` of the same model, with peft's LoRA (rank 8,
alpha 16) on q/k/v/o and gradient checkpointing, under the same autocast. Peak memory is then the high-water mark
from the first training step on (``/proc/self/clear_refs`` resets it after loading), so that ownlm's fp32 load
does not count against it; the resident size after loading is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
INSTRUCTIONS = DATA / "instructions" / "instruction-data.json"
GPT2_TOK = DATA / "gpt2_tokenizer"
SHAPES = {"mini": dict(n_layer=6, n_head=6, n_embd=384), "gpt2": dict(n_layer=12, n_head=12, n_embd=768)}
VOCAB = 50257
MODES = ["full", "lora"]
SIDES = ["ownlm", "hf", "ownlm-fullhead"]  # the last: the output head on every position (before that fix)


def prepare(path: Path, max_length: int, base: Path | None = None) -> dict:
    """Render + encode the instruction data once (ownlm's template and GPT-2 tokenizer, or an imported base's
    own template and tokenizer); save ids and masks."""
    import numpy as np

    from ownlm.finetune.data import load_examples
    from ownlm.finetune.sft import encode_examples
    from ownlm.tokenizer.chat import get_template
    from ownlm.tokenizer.export import from_gpt2

    if base is not None:
        from ownlm.model.checkpoint import resolve_checkpoint
        from ownlm.tokenizer import Tokenizer
        from ownlm.tokenizer.chat import load_template

        folder = resolve_checkpoint(base)
        tok, template = Tokenizer.load(folder / "tokenizer.json"), load_template(folder)
    else:
        tok, template = from_gpt2(GPT2_TOK / "encoder.json", GPT2_TOK / "vocab.bpe"), get_template("alpaca")
    examples, _ = load_examples([INSTRUCTIONS])
    enc = encode_examples(examples, template, tok, max_length + 1, "truncate")
    lengths = np.array([len(x) for x in enc.ids])
    np.savez(path, ids=np.concatenate(enc.ids), mask=np.concatenate(enc.mask), lengths=lengths)
    return {
        **enc.counts(),
        "pad_id": tok.eot_id,
        "longest": int(lengths.max()),
        "mean": float(lengths.mean()),
    }


def load_encoded(path: Path):
    import numpy as np

    from ownlm.finetune.sft import Encoded

    z = np.load(path)
    cuts = np.cumsum(z["lengths"])[:-1]
    return Encoded(ids=list(np.split(z["ids"], cuts)), mask=list(np.split(z["mask"], cuts)))


def reset_peak_rss() -> None:
    """Start the ``VmHWM`` high-water mark again from the current resident size (Linux ``clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    """This process' resident-set high-water mark (``VmHWM``) so far, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ownlm(a, enc, pad_id: int) -> dict:
    """``ownlm finetune sft``'s path: GPT + (LoRA) + SFTBatches + SFTTask + Trainer, one eval per step (no
    validation set, so an "eval" is only the metrics record) to read each step's time."""
    import torch

    from ownlm.finetune.sft import SFT_TRAINING, SFTBatches, SFTTask
    from ownlm.model.gpt import GPT, GPTConfig
    from ownlm.train.config import fine_tuning_defaults
    from ownlm.train.trainer import Trainer

    torch.manual_seed(0)
    if a.base:  # the real weights, adapted as `ownlm build --base` adapts them
        from ownlm.finetune.common import frozen_layout, store_frozen
        from ownlm.model.adapt import AdaptConfig
        from ownlm.model.checkpoint import load_model
        from ownlm.model.lora import adapt_model
        from ownlm.pipeline import BuildConfig, _adapt_values, _sft_train
        from ownlm.train.config import TrainingConfig
        from ownlm.train.device import return_freed_memory

        build = BuildConfig(out="-", base=a.base)
        values = _adapt_values(build)
        recompute = (
            _sft_train(build)["checkpoint_activations"] and not a.no_checkpoint
        )  # the Trainer applies it
        adapt = AdaptConfig(**{k: v for k, v in values.items() if k in AdaptConfig.__dataclass_fields__})
        if TrainingConfig(checkpoint_activations=recompute, memory_mode=a.memory_mode).lean_memory:
            return_freed_memory()  # from the start, as `ownlm finetune sft` does
        model, _, _ = load_model(a.base, prepare=frozen_layout(adapt))  # the frozen weights read into bf16
        adapt_model(model, adapt)
        store_frozen(model, values["base_dtype"])
        rss_model = _vm_rss_mib()
        reset_peak_rss()
    else:
        model = GPT(GPTConfig(vocab_size=VOCAB, block_size=a.max_length, dropout=0.0, **SHAPES[a.shape]))
        if a.mode == "lora":
            from ownlm.model.lora import LoRAConfig, apply_lora

            apply_lora(model, LoRAConfig(rank=8, alpha=16.0, targets=["attn"]))
        rss_model = peak_rss_mib()
        recompute = False
    total = a.warmup + a.steps
    tc = fine_tuning_defaults(**SFT_TRAINING, max_iters=total, batch_size=a.batch_size, eval_interval=1, device=a.device,
                               dtype=a.dtype, threads=a.threads, progress=False, seed=0,
                               checkpoint_interval=10**9, keep_checkpoints=1, checkpoint_activations=recompute,
                               memory_mode=a.memory_mode)  # fmt: skip
    records: list[dict] = []
    peak: list[float] = []

    class Task(SFTTask):
        def on_eval(self, model, step, record):
            records.append(dict(record))
            if step == total:  # before the closing checkpoint is written
                peak.append(peak_rss_mib())

        def save_extra(self, folder):
            pass  # no chat template: this run only measures speed

        def loss(self, model, batch):
            if a.side == "ownlm-fullhead":  # the head on every position, as before ``scored_only``
                return model(batch["input_ids"], batch["labels"], reduction="sum")[1]
            return super().loss(model, batch)

    batches = SFTBatches(enc, a.batch_size, a.max_length, pad_id, seed=0)
    task = Task(batches, None, 0, None, pad_id)
    with tempfile.TemporaryDirectory(prefix="ownlm-sft-speed-") as run:
        Trainer(model, tc, task, run, log=lambda m: None, flops_seq_len=a.max_length).fit()
    timed = [r for r in records if r["step"] > a.warmup]
    tokens = sum(r["tokens"] - p["tokens"] for p, r in zip(records, records[1:]) if r["step"] > a.warmup)
    seconds = sum(
        (r["tokens"] - p["tokens"]) / r["tokens_per_s"]
        for p, r in zip(records, records[1:])
        if r["step"] > a.warmup
    )
    assert len(timed) == a.steps, (len(timed), a.steps)
    return {"tokens": tokens, "seconds": seconds, "peak_rss_mib": peak[0], "rss_after_model_mib": rss_model,
            "loss_first": records[0]["train_loss"], "loss_last": records[-1]["train_loss"]}  # fmt: skip


def run_hf(a, enc, pad_id: int) -> dict:
    """transformers' GPT2LMHeadModel (+ peft LoRA) in a plain loop over the same batches."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from ownlm.finetune.sft import IGNORE, SFTBatches
    from ownlm.train.device import autocast

    torch.manual_seed(0)
    device = torch.device(a.device)
    if a.base:  # the same weights, exported by `ownlm export --to hf`, frozen in bf16; peft on q/k/v/o
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(a.hf, dtype=torch.bfloat16).to(device)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))  # fmt: skip
        for p in model.parameters():  # the adapters train in fp32 (as ownlm's do), the base stays bf16
            if p.requires_grad:
                p.data = p.data.float()
        model.train()
        rss_model = _vm_rss_mib()
        reset_peak_rss()
    else:
        s = SHAPES[a.shape]
        cfg = GPT2Config(vocab_size=VOCAB, n_positions=a.max_length, n_embd=s["n_embd"], n_layer=s["n_layer"],
                         n_head=s["n_head"], resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                         bos_token_id=pad_id, eos_token_id=pad_id)  # fmt: skip
        model = GPT2LMHeadModel(cfg).to(device)
        if a.mode == "lora":
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, fan_in_fan_out=True,
                                                     target_modules=["attn.c_attn", "attn.c_proj"], bias="none"))  # fmt: skip
        model.train()
        rss_model = peak_rss_mib()
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.99))  # fmt: skip
    batches = SFTBatches(enc, a.batch_size, a.max_length, pad_id, seed=0)
    tokens, seconds, losses = 0, 0.0, []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        b = batches.batch(i)
        x, y = torch.from_numpy(b["input_ids"]), torch.from_numpy(b["labels"])
        am = (torch.arange(x.size(1))[None, :] < torch.from_numpy(b["lengths"])[:, None]).long()
        x, y, am = x.to(device), y.to(device), am.to(device)
        n = int((y != IGNORE).sum())
        with autocast(device, a.dtype):
            logits = model(input_ids=x, attention_mask=am).logits
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(),
                                                     ignore_index=IGNORE, reduction="sum")  # fmt: skip
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item() / n)  # .item() waits for the step's kernels on a GPU
        if i >= a.warmup:
            seconds += time.perf_counter() - t0
            tokens += int(b["lengths"].sum())
    return {"tokens": tokens, "seconds": seconds, "peak_rss_mib": peak_rss_mib(), "rss_after_model_mib": rss_model,
            "loss_first": losses[0], "loss_last": losses[-1]}  # fmt: skip


def _vm_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    enc = load_encoded(Path(a.data))
    r = (run_hf if a.side == "hf" else run_ownlm)(a, enc, a.pad_id)
    r.update(side=a.side, shape=a.shape, mode=a.mode, tokens_per_s=r["tokens"] / r["seconds"])
    print(json.dumps(r))


def export_hf(base: str, out: Path) -> Path:
    """``ownlm export --to hf`` of an imported model (bf16 weights), for the peer to load."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "ownlm", "export", base, "--to", "hf", "--out", str(out), "--dtype", "bf16",
           "--force"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--modes", nargs="*", default=MODES, choices=MODES)
    ap.add_argument("--steps", type=int, default=0, help="timed steps (0: 20 for mini, 6 for gpt2)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument(
        "--max-length", type=int, default=256, help="longest example in tokens (longer: truncated)"
    )
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="the same for both sides")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (both sides)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where both sides train")
    ap.add_argument("--repeat", type=int, default=1, help="alternate the sides this many times")
    ap.add_argument(
        "--sides",
        nargs="*",
        default=SIDES[:2],
        choices=SIDES,
        help="ownlm-fullhead: ownlm with the output head on every position (an A/B of that change)",
    )
    ap.add_argument("--base", default=None, help="an imported model: LoRA on its own weights (see above)")
    ap.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="ownlm without the activation checkpointing `build --base` gives (the peer keeps its own)",
    )
    from _pretrained import add_memory_mode  # bench/, this script's folder, is on the path

    add_memory_mode(ap)
    ap.add_argument("--child", nargs=3, metavar=("SIDE", "SHAPE", "MODE"), help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--pad-id", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--hf", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        a.side, a.shape, a.mode = a.child
        a.steps = a.steps or (20 if a.shape == "mini" else 6)
        child(a)
        return
    work = Path(tempfile.mkdtemp(prefix="ownlm-bench-sft-"))
    data = work / "encoded.npz"
    extra: list[str] = []
    if a.base:
        a.shapes, a.modes, a.dtype = ["base"], ["lora"], "bf16"
        a.max_length = a.max_length if a.max_length != 256 else 512  # `build --base`'s rows
        extra = ["--base", a.base, "--hf", str(export_hf(a.base, work / "hf"))]
    info = prepare(data, a.max_length, Path(a.base) if a.base else None)
    load = os.getloadavg()
    print(f"{info['examples']:,} examples ({info['truncated']} truncated to {a.max_length} tokens, {info['dropped']} "
          f"dropped), {info['tokens']:,} tokens, {info['loss_tokens']:,} carry loss (mean length {info['mean']:.0f}, "
          f"longest {info['longest']}); batch {a.batch_size}, {a.dtype}, {a.threads} threads; "
          f"load average {load[0]:.1f}")  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    rows = []
    for shape in a.shapes:
        for mode in a.modes:
            got: dict[str, list[dict]] = {s: [] for s in a.sides}
            for _ in range(a.repeat):
                for side in a.sides:
                    cmd = [sys.executable, __file__, "--child", side, shape, mode, "--data", str(data),
                           "--pad-id", str(info["pad_id"]), "--steps", str(a.steps), "--warmup", str(a.warmup),
                           "--batch-size", str(a.batch_size), "--max-length", str(a.max_length),
                           "--dtype", a.dtype, "--threads", str(a.threads), "--device", a.device,
                           "--memory-mode", a.memory_mode, *(["--no-checkpoint"] if a.no_checkpoint else []),
                           *extra]  # fmt: skip
                    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
                    if out.returncode != 0:
                        raise SystemExit(f"{side} {shape} {mode} failed:\n{out.stderr[-3000:]}")
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    got[side].append(r)
                    print(f"  {shape:>4} {mode:<4} {side:<14} {r['tokens_per_s']:>9,.0f} tok/s  peak RSS "
                          f"{r['peak_rss_mib']:>7,.0f} MiB (after model {r['rss_after_model_mib']:,.0f})  loss "
                          f"{r['loss_first']:.3f} -> {r['loss_last']:.3f}")  # fmt: skip
            best = {s: max(got[s], key=lambda r: r["tokens_per_s"]) for s in a.sides}
            mem = {s: min(r["peak_rss_mib"] for r in got[s]) for s in a.sides}
            if "ownlm-fullhead" in best and "ownlm" in best:
                gain = best["ownlm"]["tokens_per_s"] / best["ownlm-fullhead"]["tokens_per_s"]
                print(
                    f"{shape} {mode}: scored-only output head {gain:.2f}x the tokens/s of the head on every position"
                )
            if not {"ownlm", "hf"} <= set(best):
                continue
            speed = best["ownlm"]["tokens_per_s"] / best["hf"]["tokens_per_s"]
            memr = mem["ownlm"] / mem["hf"]
            goal = (
                (1.5, 0.8) if a.base else (1.3, 1.0)
            )  # issue 16's goal for a real base; issue 7's otherwise
            met = speed >= goal[0] and memr <= goal[1]
            rows.append({"shape": shape, "mode": mode, "ownlm_tok_s": best["ownlm"]["tokens_per_s"],
                         "hf_tok_s": best["hf"]["tokens_per_s"], "speed_ratio": speed,
                         "ownlm_mib": mem["ownlm"], "hf_mib": mem["hf"], "memory_ratio": memr,
                         "target_met": met})  # fmt: skip
            print(f"{shape} {mode}: ownlm {best['ownlm']['tokens_per_s']:,.0f} tok/s, {mem['ownlm']:,.0f} MiB; "
                  f"transformers{'+peft' if mode == 'lora' else ''} {best['hf']['tokens_per_s']:,.0f} tok/s, "
                  f"{mem['hf']:,.0f} MiB -> speed {speed:.2f}x, memory {memr:.2f}x "
                  f"(target >= {goal[0]}x at <= {goal[1]}x: {'met' if met else 'missed'})")  # fmt: skip
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
