"""The one training loop (pretraining and every fine-tuning task hand their model and batches to ``train``).

One optimiser step = ``grad_accum`` micro-batches per process (gradients summed, DDP syncing only on the last),
then unscale (fp16), clip, AdamW step with the scheduled learning rate. Around it: evaluation every
``eval_interval`` steps, checkpoints, ``metrics.jsonl``, a progress bar, and the ways a run ends —

- the step, token or time budget is spent (with ``max_minutes`` the learning-rate schedule runs on elapsed time,
  so the decay ends when the time does);
- the loss is NaN/inf: stop before the bad step is saved, name the last good checkpoint;
- out of memory: say which setting to lower;
- Ctrl-C / SIGTERM: finish the current step, save, exit (a second Ctrl-C aborts at once).

Exact resume: batch ``i`` depends only on ``(seed, i)``, the schedule only on the step (or elapsed time), and
the checkpoint holds optimizer moments and RNG states; so stop-and-resume gives the weights of an unbroken run.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ownlm.errors import UserError


@dataclass
class TrainData:
    """What the loop trains on: ``train.batch(i)`` and ``val.batch(i)`` give (x, y) numpy arrays, this process'
    slice of global batch ``i`` (see ``WindowSampler``). ``val`` may be None (no evaluation)."""

    train: object
    val: object | None = None
    tokens_per_byte: float | None = None  # of the val split: turns nats/token into bits/byte


class Stop(Exception):
    """Internal: a run that must end now (NaN loss)."""


def default_loss(model, x, y):
    return model(x, y)[1]


def train(model, cfg, data: TrainData, run_dir, *, tokenizer=None, resume=None, run_config=None,
          sample_fn=None, loss_fn=default_loss, log=None) -> dict:  # fmt: skip
    """Train ``model`` (built on CPU; moved to the device here) with the settings of ``cfg`` (a
    ``PretrainConfig`` or any object with the same training fields). ``resume``: ``(step folder, state)``.
    Returns a summary: ``{"status": "done"|"interrupted", "step", "val_loss", "checkpoint"}``.
    """
    import torch
    from tqdm import tqdm

    from ownlm.model.checkpoint import unwrap
    from ownlm.train import checkpoint as ckpt
    from ownlm.train.device import autocast, choose_dtype, ddp_info, is_oom, peak_flops, pick_device
    from ownlm.train.metrics import MetricsLog
    from ownlm.train.optim import lr_at, make_optimizer

    t_begin = time.perf_counter()  # a time budget counts from here: set-up and the dtype probe included
    rank, _, world = ddp_info()
    master = rank == 0
    log = log or (tqdm.write if master else (lambda *a, **k: None))
    run_dir = Path(run_dir)
    device = pick_device(cfg.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    T, B, accum = data.train.block_size, data.train.batch_size, cfg.grad_accum
    tokens_per_step = B * T * accum * world
    state = dict(resume[1]) if resume else {}
    step = int(state.get("step", 0))

    raw = unwrap(model).to(device)

    def to_device(x, y):
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        if device.type == "cuda":
            return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x.to(device), y.to(device)

    def probe(dtype):  # one forward+backward pass that leaves no trace (for --dtype auto)
        rng = torch.get_rng_state()
        x, y = to_device(*data.train.batch(0))
        with autocast(device, dtype):
            loss = loss_fn(raw, x, y)
        loss.backward()
        raw.zero_grad(set_to_none=True)
        sync()
        torch.set_rng_state(rng)

    dtype = state.get("dtype") or choose_dtype(cfg.dtype, device, probe, log)
    if world > 1:  # timings differ between processes: all use process 0's choice
        import torch.distributed as dist

        choice = [dtype]
        dist.broadcast_object_list(choice, src=0)
        dtype = choice[0]
    optimizer = make_optimizer(raw, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device=device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16")
    if resume:
        ckpt.load_optimizer(resume[0], optimizer, scaler)
    model = raw
    if cfg.compile:
        model = torch.compile(raw)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    # Budget: steps, tokens, or minutes (the schedule then runs on elapsed time).
    budget_s = cfg.max_minutes * 60 if cfg.max_minutes else None
    max_iters = cfg.max_iters
    if cfg.max_tokens:
        max_iters = math.ceil(cfg.max_tokens / tokens_per_step)
    if not max_iters and not budget_s:
        raise UserError("give a budget: --max-iters, --max-tokens or --max-minutes")
    flops_per_token = raw.flops_per_token(T) if hasattr(raw, "flops_per_token") else 6 * raw.num_params()
    peak = peak_flops(device) if master else 0.0
    metrics = MetricsLog(run_dir, resume_step=step if resume else None) if master else None
    best_val = state.get("best_val_loss") or math.inf
    tokens_seen = int(state.get("tokens_seen", 0))
    elapsed0 = float(state.get("elapsed_s", 0.0))
    warmup_progress = state.get("warmup_progress")
    run_config = run_config or state.get("run_config") or {}

    def progress_now(elapsed: float) -> float:
        if budget_s:  # the schedule spans the time left after set-up (the budget itself includes set-up)
            return min(1.0, (elapsed - setup_s) / max(budget_s - setup_s, 1e-9))
        return step / max_iters

    def evaluate() -> tuple[float | None, float | None]:
        if data.val is None or not cfg.eval_iters:
            return None, None
        losses = torch.zeros(2, device=device)  # (sum, count)
        model.eval()
        with torch.no_grad(), autocast(device, dtype):
            for i in range(cfg.eval_iters):  # each process scores its slice of the same batches
                x, y = to_device(*data.val.batch(i))
                losses[0] += loss_fn(raw, x, y).float()
                losses[1] += 1
        model.train()
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(losses)
        val = (losses[0] / losses[1]).item()
        bpb = val * data.tokens_per_byte / math.log(2) if data.tokens_per_byte else None
        return val, bpb

    def save(at_step: int, elapsed: float) -> Path | None:
        path = None
        if master:
            best = best_val if math.isfinite(best_val) else None
            extra = {"tokens_seen": tokens_seen, "data_position": at_step * accum, "best_val_loss": best,
                     "elapsed_s": elapsed, "setup_s": setup_s, "dtype": dtype, "warmup_progress": warmup_progress,
                     "world_size": world, "run_config": run_config}  # fmt: skip
            path = ckpt.save_checkpoint(run_dir, at_step, raw, optimizer, extra, tokenizer=tokenizer,
                                        scaler=scaler, keep=cfg.keep_checkpoints)  # fmt: skip
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        return path

    stop_flag = {"n": 0}  # signals seen

    def on_signal(signum, frame):
        stop_flag["n"] += 1
        if stop_flag["n"] > 1:
            raise KeyboardInterrupt
        log("stopping after this step and saving a checkpoint (Ctrl-C again to abort without saving)")

    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)

    # Seed (or restore) the generators last, so that nothing in the set-up above shifts them.
    if resume:
        ckpt.set_rng_state(state.get("rng", {}))
    else:
        torch.manual_seed(cfg.seed + rank)
    total_guess = max_iters or None
    show = None if cfg.progress and master else True  # None: tqdm shows the bar only on a terminal
    bar = tqdm(total=total_guess, initial=step, unit="step", desc="train", disable=show,
               dynamic_ncols=True)  # fmt: skip
    model.train()
    t_start = time.perf_counter() - elapsed0 if resume else t_begin
    setup_s = state.get("setup_s") or time.perf_counter() - t_start
    last_ckpt = resume[0] if resume else None
    window = {"loss": 0.0, "steps": 0, "tokens": 0, "time": 0.0, "lr": 0.0}
    overhead = 0.0  # seconds the last evaluation + checkpoint took: kept free at the end of a timed run
    status, val_loss = "done", None

    last_plot = [-math.inf]

    def eval_and_save(checkpoint: bool, final: bool = False) -> None:
        nonlocal val_loss, best_val, last_ckpt, overhead, window
        t_eval = time.perf_counter()
        val_loss, val_bpb = evaluate()
        if val_loss is not None and not math.isfinite(val_loss):
            raise Stop(f"{val_loss} on the validation split")
        if val_loss is not None:
            best_val = min(best_val, val_loss)
        tok_s = window["tokens"] / max(window["time"], 1e-9)
        mfu = flops_per_token * tok_s / world / peak if peak else 0.0
        train_loss = window["loss"] / window["steps"] if window["steps"] else None
        record = {"step": step, "train_loss": train_loss, "val_loss": val_loss,
                  "val_ppl": math.exp(min(val_loss, 50)) if val_loss is not None else None,
                  "val_bpb": val_bpb, "lr": window["lr"], "tokens": tokens_seen, "tokens_per_s": tok_s,
                  "mfu": mfu, "elapsed_s": time.perf_counter() - t_start}  # fmt: skip
        window = {"loss": 0.0, "steps": 0, "tokens": 0, "time": 0.0, "lr": window["lr"]}
        if master:
            metrics.add(record)
            if final or time.perf_counter() - last_plot[0] > 60:  # plotting costs ~0.2 s: once a minute
                metrics.plot()
                last_plot[0] = time.perf_counter()
            tl = f"train {train_loss:.4f}" if train_loss is not None else "train -"
            bpb = f" ({val_bpb:.3f} bits/byte)" if val_bpb is not None else ""
            vl = f", val {val_loss:.4f}{bpb}" if val_loss is not None else ""
            log(f"step {step}: {tl}{vl}, {tok_s:,.0f} tok/s, mfu {100 * mfu:.1f}%")
            if sample_fn is not None:
                raw.eval()
                sample_fn(raw, step)
                raw.train()
        if checkpoint:
            last_ckpt = save(step, time.perf_counter() - t_start)
        overhead = time.perf_counter() - t_eval

    try:
        stop = False
        while True:
            elapsed = time.perf_counter() - t_start
            if max_iters and step >= max_iters:
                break
            if stop:
                break
            if warmup_progress is None and step >= cfg.warmup_iters:
                warmup_progress = progress_now(elapsed) if budget_s else cfg.warmup_iters / max_iters
            lr = lr_at(step, progress_now(elapsed), cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.schedule,
                       cfg.decay_frac, warmup_progress or 0.0)  # fmt: skip
            for g in optimizer.param_groups:
                g["lr"] = lr
            t0 = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            try:
                for micro in range(accum):
                    x, y = to_device(*data.train.batch(step * accum + micro))
                    last = micro == accum - 1
                    no_sync = model.no_sync() if world > 1 and not last else contextlib.nullcontext()
                    with no_sync, autocast(device, dtype):
                        loss = loss_fn(model, x, y)
                    loss_sum += loss.detach().float()
                    with no_sync:
                        scaler.scale(loss / accum).backward()
            except Exception as e:
                if is_oom(e):
                    raise UserError(
                        f"out of memory on {device} (micro-batch {B} x {T} tokens): lower --batch-size (raise "
                        "--grad-accum to keep the tokens per step), lower --block-size, or train a smaller model"
                    ) from None
                raise
            # One collective per step, so every process takes the same decisions: mean loss, Ctrl-C, time up.
            time_up = (
                bool(budget_s)
                and time.perf_counter() - t_start + (time.perf_counter() - t0) + overhead >= budget_s
            )
            flags = torch.tensor([0.0, float(stop_flag["n"] > 0), float(time_up)], device=device)
            flags[0] = loss_sum / accum
            if world > 1:
                import torch.distributed as dist

                dist.all_reduce(flags)
                flags[0] /= world
            step_loss, interrupted, time_up = flags[0].item(), flags[1].item() > 0, flags[2].item() > 0
            if not math.isfinite(step_loss):
                raise Stop(step_loss)
            if cfg.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            sync()
            step += 1
            tokens_seen += tokens_per_step
            window["loss"] += step_loss
            window["steps"] += 1
            window["tokens"] += tokens_per_step
            window["time"] += time.perf_counter() - t0
            window["lr"] = lr
            tok_s = window["tokens"] / max(window["time"], 1e-9)
            mfu = flops_per_token * tok_s / world / peak if peak else 0.0
            if budget_s:
                bar.total = max(step + 1, int(step * budget_s / max(time.perf_counter() - t_start, 1e-9)))
            bar.set_postfix(
                loss=f"{step_loss:.3f}", tok_s=f"{tok_s:,.0f}", mfu=f"{100 * mfu:.1f}%", refresh=False
            )
            bar.update(1)
            stop = interrupted or time_up
            if interrupted:
                status = "interrupted"
            at_end = stop or bool(max_iters and step >= max_iters)
            if step % cfg.eval_interval == 0 or at_end:
                eval_and_save(at_end or step % cfg.checkpoint_interval == 0, final=at_end)
            elif step % cfg.checkpoint_interval == 0:
                last_ckpt = save(step, time.perf_counter() - t_start)
    except Stop as e:
        where = (
            f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint had been saved yet"
        )
        raise UserError(
            f"loss became {e.args[0]} at step {step + 1}: training stopped without saving the bad step; {where}. "
            "Lower --lr, keep --grad-clip on, or try --dtype fp32"
        ) from None
    finally:
        bar.close()
        for sig, h in handlers.items():
            signal.signal(sig, h)
    if status == "interrupted" and master:
        log(f"interrupted at step {step}: saved {last_ckpt}; continue with --resume")
    return {
        "status": status,
        "step": step,
        "val_loss": val_loss,
        "checkpoint": str(last_ckpt),
        "dtype": dtype,
    }
