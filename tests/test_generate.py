"""Generation: greedy == top-k 1 == argmax of the full forward, seeds reproduce, stop tokens and strings stop,
sampling filters keep the right tokens, streaming prints what is returned, and the ``ownlm generate`` CLI."""

import json

import pytest
import torch

from ownlm.cli import main as cli
from ownlm.model.checkpoint import save_model
from ownlm.model.gpt import GPT, GPTConfig
from ownlm.runtime.decode import generate
from ownlm.runtime.sampling import apply_repetition_penalty, sample_next
from ownlm.runtime.text import TextStreamer, cut_at_stop
from ownlm.tokenizer import Tokenizer

BYTES_TOK = Tokenizer(special_tokens={"<|endoftext|>": 256})  # 256 byte tokens + end of text


def tiny(seed=0, vocab=257, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(**{"vocab_size": vocab, "block_size": 32, "n_layer": 2, "n_head": 2, "n_embd": 32, **kw})
    return GPT(cfg).eval()


def greedy_reference(model, prompt, n):
    """argmax of a full forward over the whole sequence, one token at a time (no cache)."""
    seq = list(prompt)
    for _ in range(n):
        logits, _ = model(torch.tensor([seq[-model.config.block_size :]]))
        seq.append(int(logits[0, -1].argmax()))
    return seq[len(prompt) :]


@pytest.mark.parametrize("pos", ["learned", "rope", "sinusoidal"])
def test_greedy_equals_top_k_1_equals_full_forward_argmax(pos):
    model = tiny(pos=pos, n_kv_head=1)
    prompt = [5, 17, 200, 3]
    ref = greedy_reference(model, prompt, 20)
    assert generate(model, prompt, 20, temperature=0)[0] == ref
    assert generate(model, prompt, 20, temperature=1.0, top_k=1, seed=3)[0] == ref
    assert generate(model, torch.tensor([prompt]), 20, temperature=0, num_samples=3) == [ref] * 3


def test_longer_than_block_size_keeps_going():
    model = tiny(pos="learned")  # block_size 32
    out = generate(model, list(range(30)), 50, temperature=0)[0]
    assert len(out) == 50
    assert out[:2] == greedy_reference(model, list(range(30)), 2)  # before the window slides: exact


def test_seed_reproduces_and_different_seeds_differ():
    model = tiny()
    a = generate(model, [1, 2, 3], 20, temperature=1.0, seed=7, num_samples=2)
    assert a == generate(model, [1, 2, 3], 20, temperature=1.0, seed=7, num_samples=2)
    assert a != generate(model, [1, 2, 3], 20, temperature=1.0, seed=8, num_samples=2)
    assert a[0] != a[1]  # the samples of one call are different draws


def test_stop_token_ends_a_sample_and_is_not_returned():
    model = tiny()
    ref = greedy_reference(model, [1, 2], 12)
    stop = ref[5]
    first = ref.index(stop)
    assert generate(model, [1, 2], 12, temperature=0, stop_token_ids=[stop])[0] == ref[:first]


def test_stop_string_ends_a_sample():
    model = tiny(vocab=128)  # ASCII only, so any slice of the output is text
    ref = greedy_reference(model, [104, 105], 15)
    text = BYTES_TOK.decode(ref)
    stop = BYTES_TOK.decode(ref[6:8])
    out = generate(model, [104, 105], 15, temperature=0, stop_strings=[stop], tokenizer=BYTES_TOK)[0]
    end = BYTES_TOK.decode_bytes(ref).find(stop.encode()) + len(stop.encode())
    assert BYTES_TOK.decode_bytes(out) == BYTES_TOK.decode_bytes(ref)[:end]  # tokens up to the completing one
    assert cut_at_stop(BYTES_TOK.decode(out), [stop]) == cut_at_stop(text, [stop])


def test_stream_callback_sees_exactly_the_returned_tokens():
    model = tiny()
    seen = {0: [], 1: []}
    out = generate(
        model, [9], 10, temperature=1.0, seed=1, num_samples=2, stream=lambda b, t: seen[b].append(t)
    )
    assert [seen[0], seen[1]] == out


def test_vocab_limit_keeps_padding_ids_out():
    model = tiny(vocab=300)
    for s in generate(model, [1], 30, temperature=2.0, seed=0, num_samples=4, vocab_limit=257):
        assert max(s) < 257


def test_sample_next_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, top_k=2, generator=g)[:, 0].tolist()) == {0, 1}
    assert set(sample_next(logits, top_p=0.6, generator=g)[:, 0].tolist()) == {0, 1}  # 0.5 < 0.6 needs a 2nd
    assert set(sample_next(logits, top_p=0.4, generator=g)[:, 0].tolist()) == {0}
    assert sample_next(logits, temperature=0)[:, 0].eq(0).all()
    freq = torch.bincount(sample_next(logits, generator=g)[:, 0], minlength=4) / 4000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.05]), atol=0.03, rtol=0)


def test_repetition_penalty_lowers_only_seen_tokens():
    logits = torch.tensor([[2.0, -1.0, 3.0, -2.0]])
    out = apply_repetition_penalty(logits.clone(), torch.tensor([[0, 1, 1]]), 2.0)
    torch.testing.assert_close(out, torch.tensor([[1.0, -2.0, 3.0, -2.0]]))


def test_text_streamer_prints_whole_characters_and_holds_back_stop_strings(capsys):
    import io

    buf = io.StringIO()
    s = TextStreamer(BYTES_TOK, stop_strings=["END"], file=buf)
    for b in "héllo wörld ENDmore".encode():
        s(0, b)
    assert s.finish() == "héllo wörld "
    assert buf.getvalue() == "héllo wörld "


@pytest.mark.parametrize("batched", [False, True])
def test_inference_layout_keeps_logits_and_ties(batched):
    from ownlm.runtime.device import inference_layout

    model = tiny()
    x = torch.randint(0, 257, (2, 12))
    before = model(x)[0]
    inference_layout(model, batched=batched)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert model.transformer.h[0].mlp.c_fc.weight.stride() == (1, 128)  # widening: stored (in, out)
    narrowing = model.transformer.h[0].mlp.c_proj.weight.stride()
    assert narrowing == ((1, 32) if batched else (128, 1))  # narrowing: only for batched decoding
    torch.testing.assert_close(model(x)[0], before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("width", [64, 40])  # 64: PyTorch's fused int8 kernel; 40: the plain fallback
def test_int8_quantized_model_stays_close(width):
    from ownlm.model.quantize import Int8Linear, quantize_int8

    model = tiny(n_embd=width, n_head=2)
    x = torch.randint(0, 257, (2, 12))
    before = model(x)[0]
    quantize_int8(model)
    assert isinstance(model.lm_head, Int8Linear) and isinstance(
        model.transformer.h[1].attn.c_attn, Int8Linear
    )
    after = model(x)[0]
    assert (after - before).norm() / before.norm() < 0.03
    out = generate(model, [1, 2, 3], 10, temperature=0)[0]  # the KV cache takes its dtype from wte, not int8
    assert len(out) == 10


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def checkpoint(tmp_path):
    run = tmp_path / "run"
    save_model(run / "step_000001", tiny(), BYTES_TOK)
    (run / "latest").write_text("step_000001")
    return run


def test_cli_generates_from_a_run_folder_reproducibly(checkpoint, capsys):
    args = ["generate", str(checkpoint), "--prompt", "Hi", "--max-new-tokens", "12", "--seed", "5"]
    assert cli(args) == 0
    first = capsys.readouterr()
    assert first.out.startswith("Hi") and "tokens/s, seed 5" in first.err
    assert cli(args) == 0
    assert capsys.readouterr().out == first.out
    assert cli([*args, "--no-stream"]) == 0
    assert capsys.readouterr().out == first.out
    assert cli([*args, "--quantize", "int8"]) == 0
    assert capsys.readouterr().out.startswith("Hi")


def test_cli_several_samples_and_stop(checkpoint, capsys):
    args = ["generate", str(checkpoint / "step_000001"), "--max-new-tokens", "8", "--num-samples", "3"]
    assert cli([*args, "--seed", "1", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("---------- sample") == 3
    samples = out.split("---------- sample")[1:]
    assert len({s.split("\n", 1)[1] for s in samples}) == 1  # greedy: all the same


def test_cli_bad_inputs_exit_2(tmp_path, checkpoint, capsys):
    assert cli(["generate", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    assert "not found" in capsys.readouterr().err
    save_model(tmp_path / "notok", tiny())
    assert cli(["generate", str(tmp_path / "notok"), "--prompt", "x"]) == 2
    assert "no tokenizer.json" in capsys.readouterr().err
    cfg_file = checkpoint / "step_000001" / "config.json"
    cfg_file.write_text(json.dumps({**json.loads(cfg_file.read_text()), "version": 2}))
    assert cli(["generate", str(checkpoint), "--prompt", "x"]) == 2
    assert "newer than this ownlm" in capsys.readouterr().err
    assert cli(["generate", str(checkpoint), "--max-new-tokens", "0"]) == 2
