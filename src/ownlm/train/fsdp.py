"""Sharded training with FSDP2 (``--strategy fsdp`` under torchrun): each process keeps 1/N of every weight,
gradient and AdamW moment, and gathers a block's full weights only while that block runs.

``shard(model, dtype)`` applies ``torch.distributed.fsdp.fully_shard`` to every transformer block and then to the
root (embeddings, final norm and the tied head), with a mixed-precision policy from ``--dtype``: bf16/fp16
weights are gathered for the matmuls while the sharded fp32 copy is what AdamW updates, and gradients are
reduced in fp32. Checkpoints stay ONE consolidated model: ``full_model_state`` and ``full_optimizer_state`` gather
the full tensors onto process 0's CPU (every process takes part), so a step folder of an FSDP run is the same
``model.safetensors`` + ``optimizer.safetensors`` as any other run's, which every other command reads, and a
resumed run loads the model whole before it is sharded again and scatters the optimizer state back with
``load_full_optimizer_state``.

>>> shard(model, "bf16"); local_numel(model) * world == model.num_params()  # doctest: +SKIP
True
"""

from __future__ import annotations

STRATEGIES = ("ddp", "fsdp")


def blocks(model):
    """The modules sharded one by one: the transformer blocks (of a language model or a classifier's body)."""
    from ownlm.model.gpt import Block

    return [m for m in model.modules() if isinstance(m, Block)]


def shard(model, dtype: str):
    """Shard ``model`` in place (per block, then the root); returns it. Call before making the optimiser."""
    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from ownlm.runtime.device import torch_dtype

    policy = MixedPrecisionPolicy(param_dtype=None if dtype == "fp32" else torch_dtype(dtype),
                                  reduce_dtype=torch.float32)  # fmt: skip
    for block in blocks(model):
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def local_numel(model) -> int:
    """How many parameter values this process holds (its shards)."""
    return sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())


def _options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_model_state(model) -> dict:
    """The full, unsharded state dict on process 0's CPU ({} on the others); every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options(cpu_offload=True))


def _param_index(model, optimizer) -> dict[str, int]:
    """Parameter name -> its index in ``optimizer.state_dict()`` (params numbered group by group)."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    return {n: i for i, n in enumerate(order)}


def full_optimizer_state(model, optimizer) -> dict:
    """The optimiser's full state on process 0's CPU in ``optimizer.state_dict()``'s own form (params numbered,
    as an unsharded run writes it), {} on the others; every process must call it."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    osd = get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))
    if not osd:
        return {}
    index = _param_index(model, optimizer)
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in osd["param_groups"]]
    return {"state": {index[n]: s for n, s in osd["state"].items()}, "param_groups": groups}


def load_full_optimizer_state(model, optimizer, sd: dict) -> None:
    """Load a full optimiser state (``optimizer.state_dict()``'s form, read by every process) into the sharded
    optimiser: each process keeps its shard."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    name = {i: n for n, i in _param_index(model, optimizer).items()}
    groups = [{**g, "params": [name[i] for i in g["params"]]} for g in sd["param_groups"]]
    osd = {"state": {name[int(i)]: s for i, s in sd["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(model, optimizer, osd, options=_options())


class FullOptimizer:
    """A sharded optimiser seen whole, for the checkpoint code: ``gather()`` (every process) collects the full
    state that ``state_dict()`` then returns on process 0; ``load_state_dict(full)`` (every process) keeps this
    process' shard of it."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer, self.full = model, optimizer, {}

    def gather(self) -> None:
        self.full = full_optimizer_state(self.model, self.optimizer)

    def state_dict(self) -> dict:
        return self.full

    def load_state_dict(self, sd: dict) -> None:
        load_full_optimizer_state(self.model, self.optimizer, sd)


def shard_report(model, optimizer) -> str:
    """A line saying how many weight and AdamW-state values each process holds; every process must call it."""
    import torch.distributed as dist

    def local(t):
        return t.to_local().numel() if hasattr(t, "to_local") else t.numel()

    moments = sum(local(v) for s in optimizer.state.values() for k, v in s.items() if k != "step")
    mine = [local_numel(model), moments]
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    weights, state = (" + ".join(f"{e[i]:,}" for e in every) for i in (0, 1))
    return (f"fsdp: weights per process {weights} of {sum(e[0] for e in every):,}; "
            f"AdamW state per process {state} of {sum(e[1] for e in every):,}")  # fmt: skip
