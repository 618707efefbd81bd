"""``ownlm serve``: the batched engine is exact (greedy output alone = among others = ``generate``), the API
answers the real ``openai`` client (completions and chat, streaming and not, stop, n, seed, usage), bad input
gets OpenAI-style errors while the server keeps serving, a client that goes away stops its generation, and a
bounded load test (16 clients x 5 requests) finishes without errors."""

import http.client
import json
import statistics
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from ownlm.cli import main as cli  # noqa: E402
from ownlm.model.checkpoint import save_model  # noqa: E402
from ownlm.model.gpt import GPT, GPTConfig  # noqa: E402
from ownlm.runtime import text  # noqa: E402
from ownlm.runtime.decode import generate  # noqa: E402
from ownlm.runtime.sampling import SamplingConfig  # noqa: E402
from ownlm.runtime.text import chat_template_for  # noqa: E402
from ownlm.serve.app import Limits, create_app  # noqa: E402
from ownlm.serve.cli import ServeConfig, build_app, serve_in_thread  # noqa: E402
from ownlm.serve.engine import Engine, Result, SamplingParams  # noqa: E402
from ownlm.tokenizer import Tokenizer  # noqa: E402
from ownlm.tokenizer.chat import add_special_tokens, get_template, save_template  # noqa: E402

TEXT = ("The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. " * 20
        + "How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow. " * 20)  # fmt: skip
BYTES_TOK = Tokenizer(special_tokens={"<|endoftext|>": 256})


def tiny(seed=0, vocab=257, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = {"vocab_size": vocab, "block_size": 64, "n_layer": 2, "n_head": 4, "n_embd": 32, **kw}
    return GPT(GPTConfig(**cfg)).eval()


def make_run(root: Path, chat: bool = True) -> tuple[Path, Tokenizer, GPT]:
    """A run folder: a tiny modern-block GPT (random weights), a small trained BPE, the ChatML template."""
    tok = Tokenizer.train([TEXT], vocab_size=300, progress=False)
    if chat:
        tok = add_special_tokens(tok, ["<|im_start|>", "<|im_end|>"])
    model = tiny(vocab=320, block_size=96, n_kv_head=2, pos="rope", norm="rmsnorm", mlp="swiglu", bias=False)
    step = save_model(root / "step_000001", model, tok)
    if chat:
        save_template(step, get_template("chatml"))
    (root / "latest").write_text("step_000001\n")
    return root, tok, model


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("serve") / "my-run")


@pytest.fixture(scope="module")
def server(run):
    """(base url, app) of a live server on 127.0.0.1 for the module's tests."""
    folder, _, _ = run
    app = build_app(ServeConfig(run=str(folder), device="cpu", max_batch=4, max_tokens_cap=64))
    with serve_in_thread(app) as url:
        yield url, app


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server[0] + "/v1", api_key="unused", max_retries=0, timeout=30)


def raw(url: str, method: str, path: str, body=None, headers=None) -> tuple[int, dict]:
    """One request with the standard library: (status, JSON body)."""
    host = url.removeprefix("http://")
    conn = http.client.HTTPConnection(host, timeout=30)
    data = body if isinstance(body, bytes | None) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    res = conn.getresponse()
    payload = res.read()
    conn.close()
    return res.status, json.loads(payload) if payload else {}


def crawling(engine, seconds: float, never: Sequence[int] = ()):
    """``engine._forward`` slowed by ``seconds`` a step, with the ids in ``never`` (stop tokens) masked out, so a
    random model cannot end a generation early by sampling one."""
    slow = engine._forward

    def crawl(*a):
        time.sleep(seconds)
        logits = slow(*a)
        logits[:, list(never)] = float("-inf")
        return logits

    return crawl


def greedy_text(model, tok, ids, n, stop_ids):
    out = generate(model, ids, n, temperature=0, stop_token_ids=stop_ids, vocab_limit=tok.n_vocab)[0]
    return tok.decode(out), out


# ---------------------------------------------------------------------------------------------- the engine


def submit_all(engine, jobs, timeout_s=None):
    """Submit every (prompt, params) while holding the loop's lock, so they start together; wait for all."""
    events = [[] for _ in jobs]
    with engine.cond:
        for (prompt, params), evs in zip(jobs, events):
            engine.submit(prompt, params, evs.append, timeout_s)
    t0 = time.monotonic()
    while not all(evs and evs[-1].finish for evs in events):
        assert time.monotonic() - t0 < 30
        time.sleep(0.002)
    return [Result("".join(e.text for e in evs), [t for e in evs for t in e.tokens], evs[-1].finish,
                   evs[-1].completion_tokens) for evs in events]  # fmt: skip


@pytest.mark.parametrize("kw", [dict(pos="learned"), dict(pos="rope", n_kv_head=2), dict(pos="sinusoidal")])
def test_engine_greedy_is_the_same_alone_among_others_and_as_generate(kw):
    model = tiny(**kw)
    prompts = [[5, 17, 200, 3], list(range(1, 30)), [9], [100, 101, 102, 103, 104, 105], [7, 7], [250] * 12]
    lengths = [20, 5, 33, 12, 1, 25]  # sequences leave at different steps, so slots get reshuffled
    refs = [generate(model, p, n, temperature=0, vocab_limit=257)[0] for p, n in zip(prompts, lengths)]
    with Engine(model, BYTES_TOK, max_batch=3) as engine:  # 6 requests, 3 slots: some wait for a slot
        alone = [engine.generate(p, SamplingParams(max_new_tokens=n, temperature=0)).tokens
                 for p, n in zip(prompts, lengths)]  # fmt: skip
        assert engine.peak_batch == 1
        together = submit_all(engine, [(p, SamplingParams(max_new_tokens=n, temperature=0))
                                       for p, n in zip(prompts, lengths)])  # fmt: skip
        assert engine.peak_batch == 3  # they really shared steps
    assert alone == refs
    assert [r.tokens for r in together] == refs


def test_engine_forward_gives_the_model_logits_at_each_rows_own_position():
    model = tiny(pos="rope", n_kv_head=1, block_size=32)
    seqs = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
    engine = Engine(model, BYTES_TOK, max_batch=3)
    with torch.inference_mode():
        for slot, s in enumerate(seqs):  # prefill each sequence but its last token into its slot
            engine._forward(torch.tensor([s[:-1]]), engine.cache.rows(slot, 1))
        last = torch.tensor([[s[-1]] for s in seqs])  # (3, 1)
        got = engine._forward(last, engine.cache.rows(0, 3))  # one batched step, three different positions
        for b, s in enumerate(seqs):
            want = model(torch.tensor([s]))[0][0, -1]
            torch.testing.assert_close(got[b], want, rtol=1e-5, atol=1e-5)


def test_engine_seeded_sampling_is_the_same_alone_and_in_a_batch_and_seeds_differ():
    model = tiny()
    p = SamplingParams(max_new_tokens=15, temperature=1.0, top_p=0.9, seed=11)
    with Engine(model, BYTES_TOK, max_batch=4) as engine:
        alone = engine.generate([1, 2, 3], p).tokens
        other = engine.generate(
            [1, 2, 3], SamplingParams(max_new_tokens=15, temperature=1.0, top_p=0.9, seed=12)
        )
        seeds = (40, 11, 41, 42)
        results = submit_all(engine, [([1, 2, 3], SamplingParams(max_new_tokens=15, temperature=1.0, top_p=0.9,
                                                                 seed=s)) for s in seeds])  # fmt: skip
        assert engine.peak_batch == 4
        assert (
            engine.prefills_shared == 3
        )  # one prompt, read once for the four sequences that joined together
    assert results[1].tokens == alone
    assert other.tokens != alone


def test_engine_sequences_sharing_a_prompt_read_match_each_alone():
    model = tiny(pos="rope", n_kv_head=1)
    prompt = [5, 17, 200, 3]
    params = [SamplingParams(max_new_tokens=12, temperature=0, repetition_penalty=3.0),  # rewrites its logits
              SamplingParams(max_new_tokens=1, temperature=0),  # leaves at once: its slot is taken by the next
              SamplingParams(max_new_tokens=12, temperature=0),
              SamplingParams(max_new_tokens=9, temperature=0.7, seed=3)]  # fmt: skip
    with Engine(model, BYTES_TOK, max_batch=4) as engine:
        alone = [engine.generate(prompt, p).tokens for p in params]
        assert engine.prefills_shared == 0
        together = submit_all(engine, [(prompt, p) for p in params])
        assert engine.prefills_shared >= 2
    assert [r.tokens for r in together] == alone
    assert alone[0][0] != alone[2][0]  # the penalty changes the first token: a shared logits row would show


def test_engine_stop_strings_cut_the_text_and_stop_tokens_are_not_returned():
    model = tiny()
    with Engine(model, BYTES_TOK) as engine:
        full = engine.generate([65, 66], SamplingParams(max_new_tokens=30, temperature=0))
        assert full.finish == "length" and full.completion_tokens == 30 and len(full.tokens) == 30
        assert full.text == BYTES_TOK.decode(full.tokens)
        stop = full.text[10:12]
        cut = engine.generate([65, 66], SamplingParams(max_new_tokens=30, temperature=0, stop=[stop]))
        assert cut.finish == "stop"
        assert cut.text == full.text[: full.text.index(stop)]
        stop_id = full.tokens[7]
        by_id = engine.generate(
            [65, 66], SamplingParams(max_new_tokens=30, temperature=0, stop_ids=[stop_id])
        )
        assert by_id.finish == "stop"
        assert by_id.tokens == full.tokens[: full.tokens.index(stop_id)]
        assert by_id.completion_tokens == len(by_id.tokens) + 1  # the stop token was made, not returned
        end = engine.generate(list(range(1, 60)), SamplingParams(max_new_tokens=30, temperature=0))
        assert end.finish == "length" and len(end.tokens) == 64 - 59 + 1  # the context (64) is full


def test_engine_cancel_and_timeout_end_a_sequence_early():
    model = tiny()
    with Engine(model, BYTES_TOK, max_batch=1) as engine:
        engine._forward = crawling(engine, 0.01)
        timed = engine.generate([1, 2], SamplingParams(max_new_tokens=60, temperature=0), timeout_s=0.1)
        assert timed.finish == "timeout" and timed.completion_tokens < 60
        events = []
        ticket = engine.submit([1, 2], SamplingParams(max_new_tokens=60, temperature=0), events.append)
        while not events:
            time.sleep(0.005)
        ticket.cancel()
        t0 = time.monotonic()
        while not (events and events[-1].finish):
            time.sleep(0.005)
            assert time.monotonic() - t0 < 5
        assert events[-1].finish == "cancelled" and events[-1].completion_tokens < 60
        assert engine.finished["cancelled"] == 1 and engine.finished["timeout"] == 1


def test_engine_rejects_what_it_cannot_do():
    model = tiny()
    with Engine(model, BYTES_TOK) as engine:
        with pytest.raises(ValueError, match="context"):
            engine.submit(list(range(65)), SamplingParams(), print)
        with pytest.raises(ValueError, match="max_new_tokens"):
            engine.submit([1], SamplingParams(max_new_tokens=0), print)
    with pytest.raises(RuntimeError, match="not running"):
        engine.submit([1], SamplingParams(), print)


# ---------------------------------------------------------------------------------------------- the API


def test_models_lists_the_run_folder_name_and_health(server, client):
    url, _ = server
    assert [m.id for m in client.models.list().data] == ["my-run"]
    assert client.models.retrieve("my-run").id == "my-run"
    status, body = raw(url, "GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["model"] == "my-run"


def test_completion_is_generates_greedy_text_and_streams_the_same(run, client):
    _, tok, model = run
    prompt = "The quick brown"
    ids = tok.encode(prompt)
    want, tokens = greedy_text(model, tok, ids, 20, text.stop_ids(tok, get_template("chatml")))
    r = client.completions.create(model="my-run", prompt=prompt, max_tokens=20, temperature=0)
    assert r.choices[0].text == want
    assert r.choices[0].finish_reason == ("length" if len(tokens) == 20 else "stop")
    assert r.usage.prompt_tokens == len(ids) and r.usage.completion_tokens >= len(tokens)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    chunks = list(client.completions.create(model="my-run", prompt=prompt, max_tokens=20, temperature=0,
                                            stream=True))  # fmt: skip
    assert "".join(c.choices[0].text for c in chunks) == want
    # a chunk carries every token ready when it is written, so how many chunks a reply takes depends on timing:
    # the text and the ending are what must be the same
    assert len(chunks) >= 2 and chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason
    ids_prompt = client.completions.create(model="my-run", prompt=ids, max_tokens=20, temperature=0)
    assert ids_prompt.choices[0].text == want  # a prompt given as token ids


def test_stream_is_server_sent_events_ending_in_done(server):
    url, _ = server
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    conn.request("POST", "/v1/completions", body=json.dumps({"prompt": "Pack my", "max_tokens": 5, "stream": True,
                 "temperature": 0, "stream_options": {"include_usage": True}}))  # fmt: skip
    res = conn.getresponse()
    assert res.status == 200 and res.getheader("content-type").startswith("text/event-stream")
    events = [e for e in res.read().decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    usage = json.loads(events[-2][6:])
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] >= 1


def test_chat_uses_the_template_and_streams_the_same(run, client):
    _, tok, model = run
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Judge my vow."}]
    template = get_template("chatml")
    ids = template.encode_prompt(tok, msgs)
    want, _ = greedy_text(model, tok, ids, 24, template.stop_ids(tok))
    r = client.chat.completions.create(model="my-run", messages=msgs, max_tokens=24, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == want
    assert r.usage.prompt_tokens == len(ids)
    stream = client.chat.completions.create(model="my-run", messages=msgs, max_tokens=24, temperature=0,
                                            stream=True)  # fmt: skip
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == want
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_stop_sequences_n_and_seed(client):
    base = client.completions.create(model="my-run", prompt="Sphinx of", max_tokens=30, temperature=0)
    text = base.choices[0].text
    stop = text[8:10]
    cut = client.completions.create(model="my-run", prompt="Sphinx of", max_tokens=30, temperature=0,
                                    stop=[stop, "\x00never"])  # fmt: skip
    assert cut.choices[0].text == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    kw = dict(model="my-run", prompt="Sphinx of", max_tokens=12, temperature=1.0, n=3, seed=5)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]  # the seed reproduces
    assert len({c.text for c in a.choices}) > 1  # the choices are different draws
    other = client.completions.create(**{**kw, "seed": 6})
    assert [c.text for c in other.choices] != [c.text for c in a.choices]


@pytest.mark.parametrize(
    "path, body, status, code",
    [
        ("/v1/completions", b"{not json", 400, None),
        ("/v1/completions", b"[1, 2]", 400, None),
        ("/v1/completions", {"prompt": "a", "frobnicate": 1}, 400, "unknown_parameter"),
        ("/v1/completions", {"model": "gpt-4", "prompt": "a"}, 404, "model_not_found"),
        ("/v1/completions", {"prompt": "ab " * 200}, 400, "context_length_exceeded"),
        ("/v1/completions", {"prompt": "a", "max_tokens": 0}, 400, None),
        ("/v1/completions", {"prompt": "a", "max_tokens": 65}, 400, None),  # over --max-tokens-cap 64
        ("/v1/completions", {"prompt": "a", "n": 17}, 400, None),
        ("/v1/completions", {"prompt": "a", "temperature": "hot"}, 400, None),
        ("/v1/completions", {"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, 400, None),
        ("/v1/completions", {"prompt": [1, 99999]}, 400, None),
        ("/v1/completions", {"prompt": "a" * (1 << 20)}, 413, "request_too_large"),
        ("/v1/chat/completions", {"messages": []}, 400, None),
        ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, None),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x " * 400}]}, 400,
         "context_length_exceeded"),
        ("/v1/nothing-here", {}, 404, "not_found"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server, path, body, status, code):
    url, _ = server
    got, payload = raw(url, "POST", path, body)
    assert got == status
    err = payload["error"]
    assert isinstance(err["message"], str) and err["message"] and "type" in err
    assert err["code"] == code or code is None
    ok, after = raw(url, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 2})
    assert ok == 200 and after["choices"][0]["text"] is not None


def test_openai_client_raises_the_matching_error_classes(client):
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="a")
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="my-run", prompt="a", max_tokens=-1)


def test_api_key_and_chat_without_a_template(tmp_path):
    folder, _, _ = make_run(tmp_path / "plain", chat=False)
    app = build_app(ServeConfig(run=str(folder), device="cpu", api_key="s3cret"))
    with serve_in_thread(app) as url:
        assert raw(url, "GET", "/v1/models")[0] == 401
        status, body = raw(url, "GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        assert raw(url, "GET", "/health")[0] == 200  # no key needed
        c = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert c.completions.create(model="plain", prompt="a", max_tokens=3).choices[0].finish_reason
        with pytest.raises(openai.BadRequestError, match="chat_template|ChatML"):
            c.chat.completions.create(model="plain", messages=[{"role": "user", "content": "hi"}])


def test_a_client_that_goes_away_stops_its_generation(server, monkeypatch):
    url, app = server
    engine = app.state.engine
    # ~60 steps of 20 ms: long enough to see the generation stop early
    monkeypatch.setattr(engine, "_forward", crawling(engine, 0.02, never=[engine.tokenizer.eot_id]))
    before = engine.finished["cancelled"]
    conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    conn.request(
        "POST", "/v1/completions", body=json.dumps({"prompt": "a", "max_tokens": 60, "stream": True})
    )
    res = conn.getresponse()
    assert res.readline().startswith(b"data: ")
    conn.sock.close()  # the reader leaves mid-stream
    conn.close()
    # the same for a plain request: the client gives up waiting
    quick = http.client.HTTPConnection(url.removeprefix("http://"), timeout=0.2)
    quick.request("POST", "/v1/completions", body=json.dumps({"prompt": "b", "max_tokens": 60}))
    with pytest.raises(TimeoutError):
        quick.getresponse()
    quick.close()
    t0 = time.monotonic()
    while engine.finished["cancelled"] < before + 2:
        assert time.monotonic() - t0 < 5.0, f"still generating: {dict(engine.finished)}"
        time.sleep(0.01)


def test_a_request_over_the_time_limit_gets_504(run, monkeypatch):
    folder, tok, model = run
    engine = Engine(model, tok)
    monkeypatch.setattr(engine, "_forward", crawling(engine, 0.02, never=[tok.eot_id]))
    app = create_app(engine, "my-run", limits=Limits(timeout_s=0.2))
    with serve_in_thread(app) as url:
        status, body = raw(url, "POST", "/v1/completions", {"prompt": "a", "max_tokens": 60})
        assert status == 504 and body["error"]["code"] == "timeout"
        c = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0)
        with pytest.raises(openai.APIError, match="time"):
            list(c.completions.create(model="my-run", prompt="a", max_tokens=60, stream=True))


def test_load_16_clients_5_requests_each(server):
    url, app = server
    latencies, errors = [], []

    def client_loop(k):
        c = openai.OpenAI(base_url=url + "/v1", api_key="-", max_retries=0, timeout=60)
        for j in range(5):
            t0 = time.perf_counter()
            try:
                if (k + j) % 2:
                    stream = c.completions.create(model="my-run", prompt=f"Client {k} asks {j}", max_tokens=16,
                                                  temperature=0.8, stream=True)  # fmt: skip
                    # the last chunk says why the stream ended; each carries a text piece
                    chunks = list(stream)
                    assert chunks[-1].choices[0].finish_reason in ("length", "stop")
                    assert all(isinstance(x.choices[0].text, str) for x in chunks)
                else:
                    msgs = [{"role": "user", "content": f"Client {k} asks {j}"}]
                    c.chat.completions.create(model="my-run", messages=msgs, max_tokens=16)
                latencies.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                errors.append(repr(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    wall = time.perf_counter() - t0
    assert not errors, errors[:3]
    assert len(latencies) == 80 and wall < 120
    q = statistics.quantiles(latencies, n=100)
    print(f"\nload: 80 requests in {wall:.1f} s; latency p50 {q[49]:.3f} s, p95 {q[94]:.3f} s, "
          f"max {max(latencies):.3f} s; peak batch {app.state.engine.peak_batch}")  # fmt: skip
    assert app.state.engine.peak_batch == 4  # --max-batch 4: the clients shared steps


def test_chat_template_for_a_checkpoint_without_one_falls_back_to_chatml(tmp_path):
    folder, tok, model = make_run(tmp_path / "r", chat=False)
    assert chat_template_for(folder / "step_000001", tok)[0] is None
    with_specials = add_special_tokens(tok, ["<|im_start|>", "<|im_end|>"])
    assert chat_template_for(folder / "step_000001", with_specials)[0] == get_template("chatml")


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli(["serve", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "checkpoint not found" in err and len(err.strip().splitlines()) == 1
    assert cli(["serve", str(tmp_path), "--max-batch", "0"]) == 2


def test_generate_chat_and_serve_all_stop_at_a_chat_models_end_of_turn(tmp_path, capsys, monkeypatch):
    import io

    tok = add_special_tokens(BYTES_TOK, ["<|im_start|>", "<|im_end|>"])
    end = tok.special_tokens["<|im_end|>"]
    model = tiny(vocab=260)
    with (
        torch.no_grad()
    ):  # at every position <|im_end|> wins: ln_f gives its bias, and only wte[end] is non-zero
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.transformer.wte.weight.zero_()
        model.transformer.wte.weight[end] = 1.0
    step = save_model(tmp_path / "step_000001", model, tok)
    save_template(step, get_template("chatml"))
    args = [
        "generate",
        str(step),
        "--prompt",
        "Hi",
        "--max-new-tokens",
        "3",
        "--temperature",
        "0",
        "--no-stream",
    ]
    assert cli(args) == 0
    assert capsys.readouterr().out == "Hi\n"  # stopped at once
    assert cli([*args, "--no-stop-at-eot"]) == 0
    assert capsys.readouterr().out == "Hi" + "<|im_end|>" * 3 + "\n"  # what it did before
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n"))
    assert cli(["chat", str(step), "--temperature", "0", "--no-stream"]) == 0
    assert capsys.readouterr().out == "\n"
    app = build_app(ServeConfig(run=str(step), device="cpu"))
    with serve_in_thread(app) as url:
        for path, body in [("/v1/completions", {"prompt": "Hi"}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]})]:  # fmt: skip
            status, got = raw(url, "POST", path, {**body, "max_tokens": 3, "temperature": 0})
            assert status == 200 and got["choices"][0]["finish_reason"] == "stop", got
            assert got["usage"]["completion_tokens"] == 1


def test_serve_sampling_flags_are_the_requests_defaults(run):
    folder, tok, model = run
    app = build_app(ServeConfig(run=str(folder), device="cpu", sampling=SamplingConfig(temperature=0)))
    with serve_in_thread(app) as url:
        status, health = raw(url, "GET", "/health")
        assert health["sampling"]["temperature"] == 0
        assert health["sampling"]["max_tokens"] == 48  # min(256, half the context of 96)
        status, got = raw(url, "POST", "/v1/completions", {"prompt": "The quick"})  # no sampling fields
    ids = tok.encode("The quick")
    want, tokens = greedy_text(model, tok, ids, 48, text.stop_ids(tok, get_template("chatml")))
    assert got["choices"][0]["text"] == want  # greedy, and as long as the server's default


def test_one_sampling_defaults_table_for_generate_chat_and_serve():
    from ownlm.chat import ChatConfig
    from ownlm.generate import GenerateConfig

    configs = [GenerateConfig(run="r").sampling, ChatConfig(run="r").sampling, ServeConfig(run="r").sampling]
    assert configs == [SamplingConfig()] * 3 == [SamplingParams(stop=["x"]).__class__.__base__()] * 3
    assert SamplingConfig().max_new(128) == 64 and SamplingConfig().max_new(2048) == 256


def test_pretraining_samples_and_build_take_the_one_sampling_table(tmp_path, monkeypatch):
    """No other sampling defaults: pretraining's samples at each evaluation choose tokens by SamplingConfig's
    defaults, and `ownlm build --temperature` starts at its temperature."""
    from ownlm.pipeline import BuildConfig
    from ownlm.train import pretrain

    seen = {}
    monkeypatch.setattr(pretrain, "generate", lambda model, start, n, **kw: seen.update(kw) or [[65, 66]])
    cfg = pretrain.PretrainConfig(data="d", out=str(tmp_path))
    pretrain._sampler(cfg, Tokenizer(special_tokens={"<|endoftext|>": 256}), tmp_path, {"eot_id": 256}, None)(
        None, 3
    )
    knobs = SamplingConfig().knobs()
    assert {k: seen[k] for k in knobs} == knobs and set(knobs) == {
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
    }
    assert BuildConfig(out="o").temperature == SamplingConfig().temperature
