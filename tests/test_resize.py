"""Growing a model's vocabulary: old ids compute the same logits, new rows start at the mean, ties stay tied."""

import pytest
import torch

from ownlm.model.gpt import GPT, GPTConfig
from ownlm.model.resize import fit_vocab, grow_vocab, init_new_rows


def tiny(vocab_size=64, tie=True) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16, tie_embeddings=tie)
    return GPT(cfg).eval()


@pytest.mark.parametrize("tie", [True, False])
def test_grow_keeps_old_logits_and_starts_new_rows_at_the_mean(tie):
    model = tiny(tie=tie)
    idx = torch.randint(0, 64, (2, 10))
    before = model(idx)[0]
    old_wte = model.transformer.wte.weight.detach().clone()
    old_head = model.lm_head.weight.detach().clone()
    assert grow_vocab(model, 70) is model
    assert model.config.vocab_size == 128 and model.transformer.wte.weight.shape == (128, 16)
    assert model.lm_head.weight.shape == (128, 16) and model.lm_head.out_features == 128
    after = model(idx)[0]
    torch.testing.assert_close(after[..., :64], before, rtol=0, atol=0)
    wte = model.transformer.wte.weight
    torch.testing.assert_close(wte[:64], old_wte, rtol=0, atol=0)
    assert torch.allclose(wte[64:], old_wte.mean(0).expand(64, -1))
    assert (model.lm_head.weight is wte) == tie
    if not tie:
        assert torch.allclose(model.lm_head.weight[64:], old_head.mean(0).expand(64, -1))
    # New ids are usable end to end, and a gradient reaches the new rows.
    _, loss = model(torch.tensor([[100, 3, 127]]), targets=torch.tensor([[127, 100, 65]]))
    loss.backward()
    assert wte.grad is not None and wte.grad[100].abs().sum() > 0 and wte.requires_grad


def test_grow_is_a_no_op_when_the_model_is_big_enough():
    model = tiny()
    w = model.transformer.wte.weight
    grow_vocab(model, 64)
    grow_vocab(model, 10)
    assert model.transformer.wte.weight is w and model.config.vocab_size == 64


def test_grown_model_still_ties_after_a_step():
    model = tiny()
    grow_vocab(model, 65)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # an optimizer built after growing sees the new tensor
    _, loss = model(torch.tensor([[64, 1]]), targets=torch.tensor([[1, 64]]))
    loss.backward()
    opt.step()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert sum(p.numel() for p in model.parameters()) == model.num_params(non_embedding=False)


@pytest.mark.parametrize("tie", [True, False])
def test_init_new_rows_inside_the_padding(tie):
    model = tiny(tie=tie)
    wte = model.transformer.wte.weight
    old = wte.detach().clone()
    init_new_rows(model, 50, 52)
    assert torch.allclose(wte[50:52], old[:50].mean(0).expand(2, -1))
    torch.testing.assert_close(wte[:50], old[:50], rtol=0, atol=0)
    torch.testing.assert_close(wte[52:], old[52:], rtol=0, atol=0)  # other padding rows untouched
    if not tie:
        head = model.lm_head.weight
        assert torch.allclose(head[50:52], head[:50].mean(0).expand(2, -1))
    with pytest.raises(ValueError):
        init_new_rows(model, 50, 65)


def test_fit_vocab_uses_the_trained_rows_only():
    model = tiny()
    old = model.transformer.wte.weight.detach().clone()
    fit_vocab(model, 60, 66)  # rows 60..63 were padding, 64..65 are new
    wte = model.transformer.wte.weight
    assert model.config.vocab_size == 128
    assert torch.allclose(wte[60:66], old[:60].mean(0).expand(6, -1))
    torch.testing.assert_close(wte[:60], old[:60], rtol=0, atol=0)
