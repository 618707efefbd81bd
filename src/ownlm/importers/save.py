"""Writing an imported model: the one output rule, the model folder, a summary line."""

from __future__ import annotations

from pathlib import Path

from ownlm.io import mark_output, prepare_output, removed_on_failure

KIND = "ownlm-import"


def check_out(out, source: str) -> None:
    """The output rule, before anything is read or downloaded: a new folder or an earlier import's, never the
    source (a local path) nor a folder holding it."""
    prepare_output(out, kind=KIND, folder=True, inputs=[source] if Path(source).exists() else [])


def save_import(out, model, tokenizer, template, info: dict, source: str) -> int:
    """Write ``model`` (+ tokenizer, chat template) to the ``--out`` folder by the output rule; print a summary."""
    from ownlm.model.checkpoint import save_model
    from ownlm.tokenizer.chat import save_template

    folder = prepare_output(out, kind=KIND, folder=True, inputs=[source])
    extra = {"imported_from": source, **{k: v for k, v in info.items() if v is not None}}
    with removed_on_failure(folder):  # a full disk half-way leaves no partial model behind
        save_model(folder, model, tokenizer, extra=extra)
        if template is not None:
            save_template(folder, template)
        mark_output(folder, KIND)
    cfg = model.config
    n = model.num_params(non_embedding=False)
    print(f"imported {info.get('architecture')} model {info.get('name') or ''} ({n / 1e6:.1f}M parameters, "
          f"{cfg.n_layer} layers, {cfg.n_head}/{cfg.kv_heads} heads, context {cfg.block_size}, vocab "
          f"{cfg.vocab_size}{', chat template' if template is not None else ''}"
          f"{'' if tokenizer is not None else ', no tokenizer'}) -> {folder}")  # fmt: skip
    return 0
