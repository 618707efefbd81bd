"""The fused output head + cross-entropy: the same loss and gradients as ``F.cross_entropy`` over the logits, in
fp32 and under bf16 autocast, with ignored targets, in chunks that do not divide the rows, and inside the model."""

import pytest
import torch

from ownlm.model.gpt import GPT, GPTConfig
from ownlm.model.head_loss import head_loss_sum, reference_loss_sum


def _loss_and_grads(fn, h, w, t, autocast: bool, **kw):
    h, w = h.clone().requires_grad_(), w.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = fn(h, w, t, **kw)
    (3.0 * loss).backward()  # a scale on the loss reaches both gradients
    return loss.detach(), h.grad, w.grad


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_the_fused_head_loss_equals_cross_entropy_over_the_logits(autocast, chunk):
    torch.manual_seed(0)
    h, w = torch.randn(13, 16), torch.randn(37, 16)  # 13 rows: chunks of 4 leave a remainder
    t = torch.randint(0, 37, (13,))
    t[[2, 5, 6]] = -100  # ignored rows: no loss, no gradient
    ref = _loss_and_grads(reference_loss_sum, h, w, t, autocast)
    got = _loss_and_grads(head_loss_sum, h, w, t, autocast, chunk=chunk)
    tol = dict(atol=2e-2, rtol=2e-2) if autocast else dict(atol=1e-5, rtol=1e-5)
    assert got[0].dtype == torch.float32
    torch.testing.assert_close(got[0], ref[0], **tol)
    torch.testing.assert_close(got[1], ref[1], **tol)
    torch.testing.assert_close(got[2], ref[2], **tol)
    assert got[1][[2, 5, 6]].abs().max() == 0  # the ignored rows' hidden states get no gradient


def test_without_gradients_the_fused_head_loss_only_scores():
    torch.manual_seed(0)
    h, w, t = torch.randn(9, 8), torch.randn(11, 8), torch.randint(0, 11, (9,))
    with torch.no_grad():
        torch.testing.assert_close(head_loss_sum(h, w, t), reference_loss_sum(h, w, t))


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("tie", [True, False])
def test_the_model_trains_the_same_with_the_fused_head_on_or_off(autocast, tie):
    """GPT.fused_head_loss is a speed lever only: the same loss and gradients either way (tied head included)."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=97, block_size=16, n_layer=2, n_head=2, n_embd=32, tie_embeddings=tie))
    x, y = torch.randint(0, 97, (3, 16)), torch.randint(0, 97, (3, 16))
    y[0, :5] = -100
    runs = []
    for fused in (True, False):
        model.fused_head_loss = fused
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = model(x, y, reduction="mean", scored_only=True)[1]
        loss.backward()
        runs.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    tol = dict(atol=1e-2, rtol=1e-2) if autocast else dict(atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(runs[0][0], runs[1][0], **tol)
    for a, b in zip(runs[0][1], runs[1][1], strict=True):
        torch.testing.assert_close(a, b, **tol)
