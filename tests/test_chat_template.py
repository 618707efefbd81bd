"""Chat templates: ids/mask/text agree, text cannot inject special tokens, prompt is a prefix, Jinja parity,
save/load, adding special tokens keeps old encodings, bad conversations."""

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ownlm.errors import UserError
from ownlm.tokenizer.bpe import EOT, Tokenizer
from ownlm.tokenizer.chat import (
    IM_END,
    IM_START,
    TEMPLATES,
    add_special_tokens,
    get_template,
    load_template,
    save_template,
)

CORPUS = ["Hello there, how are you? I'm fine.\n### Instruction:\n<|im_end|> caf\u00e9 \U0001f600\n"] * 30
# Arbitrary text, biased towards the special tokens' strings and the templates' own markers.
PIECE = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8) | st.sampled_from(
    ["<|im_end|>", "<|im_start|>", EOT, "\n", "### Response:\n", " "]
)
TEXT = st.lists(PIECE, max_size=5).map("".join)
MESSAGE = st.one_of(
    st.fixed_dictionaries({"role": st.just("user"), "content": TEXT}, optional={"input": TEXT}),
    st.fixed_dictionaries({"role": st.just("assistant"), "content": TEXT.filter(lambda s: s.strip())}),
)


@st.composite
def conversations(draw, end_with_assistant=True):
    msgs = draw(st.lists(MESSAGE, min_size=1, max_size=5))
    if draw(st.booleans()):
        msgs.insert(0, {"role": "system", "content": draw(TEXT)})
    if end_with_assistant:
        msgs.append({"role": "assistant", "content": draw(TEXT.filter(lambda s: s.strip()))})
    return msgs


@pytest.fixture(scope="module")
def base() -> Tokenizer:
    return Tokenizer.train(CORPUS, vocab_size=300, special_tokens=[EOT], progress=False)


@pytest.fixture(scope="module")
def tok(base) -> Tokenizer:
    return add_special_tokens(base, [IM_START, IM_END])


SETTINGS = settings(derandomize=True, deadline=None, max_examples=80)


@pytest.mark.parametrize("name", list(TEMPLATES))
@SETTINGS
@given(msgs=conversations())
def test_ids_mask_and_text_agree(tok, name, msgs):
    t = get_template(name)
    ids, mask = t.encode(tok, msgs)
    assert len(ids) == len(mask) and set(mask) <= {0, 1}
    assert tok.decode(ids) == t.render(msgs)
    # The masked-in tokens are exactly the assistant contents, each followed by its end marker.
    learned = "".join(m["content"] + t.end_marker for m in msgs if m["role"] == "assistant")
    assert tok.decode([i for i, k in zip(ids, mask) if k]) == learned


@pytest.mark.parametrize("name", list(TEMPLATES))
@SETTINGS
@given(msgs=conversations())
def test_text_cannot_inject_special_tokens(tok, name, msgs):
    t = get_template(name)
    ids, mask = t.encode(tok, msgs)
    specials = [i for i in ids if i in tok.special_ids]
    n_assistant = sum(m["role"] == "assistant" for m in msgs)
    if name == "chatml":  # one start and one end marker per message, in order, nothing else
        assert specials == [tok.special_tokens[IM_START], tok.special_tokens[IM_END]] * len(msgs)
    else:  # one <|endoftext|> per response, and each is learned
        assert specials == [tok.eot_id] * n_assistant
        assert all(k == 1 for i, k in zip(ids, mask) if i == tok.eot_id)
    # Every end marker that carries loss closes an assistant turn: as many as there are assistant messages.
    end = tok.special_tokens[t.end_marker]
    assert sum(1 for i, k in zip(ids, mask) if i == end and k) == n_assistant


@pytest.mark.parametrize("name", list(TEMPLATES))
@SETTINGS
@given(msgs=conversations())
def test_prompt_is_prefix_of_training_encoding(tok, name, msgs):
    t = get_template(name)
    ids, _ = t.encode(tok, msgs)
    if len(msgs) == 1:  # a lone assistant message: no conversation before it
        return
    prompt = t.encode_prompt(tok, msgs[:-1])
    assert ids[: len(prompt)] == prompt and len(prompt) < len(ids)
    assert tok.decode(prompt) == t.render(msgs[:-1], add_generation_prompt=True)
    # What follows the prompt is the reply and its end marker (chatml adds one newline after it).
    rest = ids[len(prompt) :]
    assert tok.decode(rest).startswith(msgs[-1]["content"] + t.end_marker)


@pytest.mark.parametrize("name", list(TEMPLATES))
@SETTINGS
@given(msgs=conversations(end_with_assistant=False))
def test_jinja_renders_the_same_text(name, msgs):
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    t = get_template(name)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # as Hugging Face renders
    compiled = env.from_string(t.to_jinja())
    for gen in (False, True):
        assert compiled.render(messages=msgs, add_generation_prompt=gen) == t.render(msgs, gen)
    assert jinja2


def test_jinja_parity_through_transformers():
    ctu = pytest.importorskip("transformers.utils.chat_template_utils")
    msgs = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Sum", "input": "2 + 2"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And <|im_end|>?"},
    ]
    for t in TEMPLATES.values():
        out = ctu.render_jinja_template([msgs], chat_template=t.to_jinja(), add_generation_prompt=True)
        rendered = out[0][0] if isinstance(out, tuple) else out[0]
        assert rendered == t.render(msgs, add_generation_prompt=True)


def test_layouts_spelled_out(tok):
    msgs = [{"role": "user", "content": "Add", "input": "1 2"}, {"role": "assistant", "content": "3"}]
    assert get_template("chatml").render(msgs, add_generation_prompt=False) == (
        "<|im_start|>user\nAdd\n\n1 2<|im_end|>\n<|im_start|>assistant\n3<|im_end|>\n"
    )
    assert get_template("alpaca").render(msgs) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the "
        "request.\n\n### Instruction:\nAdd\n\n### Input:\n1 2\n\n### Response:\n3<|endoftext|>"
    )
    sys = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q", "input": ""}]
    assert get_template("alpaca").render(sys, True) == "Be brief.\n\n### Instruction:\nQ\n\n### Response:\n"
    assert get_template("chatml").stop_ids(tok) == [tok.special_tokens[IM_END], tok.eot_id]
    assert get_template("alpaca").stop_ids(tok) == [tok.eot_id]


def test_add_special_tokens_keeps_old_encodings(base, tok):
    assert tok.special_tokens[EOT] == base.special_tokens[EOT] and tok.merges == base.merges
    assert [tok.special_tokens[IM_START], tok.special_tokens[IM_END]] == [base.n_vocab, base.n_vocab + 1]
    assert tok.n_vocab == base.n_vocab + 2
    for text in CORPUS[:1] + ["<|endoftext|> x", "\U0001f600 plain"]:
        assert tok.encode_ordinary(text) == base.encode_ordinary(text)
        assert tok.encode(text, allowed_special={EOT}, disallowed_special=()) == base.encode(
            text, allowed_special={EOT}, disallowed_special=()
        )
    assert add_special_tokens(tok, [IM_END, EOT]) == tok  # nothing missing: nothing changes
    assert add_special_tokens(base, []) == base and add_special_tokens(base, []) is not base


def test_missing_special_token_is_a_user_error(base):
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    with pytest.raises(UserError, match="add_special_tokens"):
        get_template("chatml").encode(base, msgs)
    get_template("alpaca").encode(base, msgs)  # alpaca needs only <|endoftext|>


def test_save_load_round_trip(tmp_path):
    for t in TEMPLATES.values():
        assert type(t).from_dict(json.loads(json.dumps(t.to_dict()))) == t
        d = tmp_path / t.name
        path = save_template(d, t)
        assert path == d / "chat_template.json" and load_template(d) == t
        assert json.loads(path.read_text())["format"] == "ownlm-chat-template"
    assert load_template(tmp_path / "nothing") is None


@pytest.mark.parametrize(
    "content, match",
    [
        ("{", "not valid JSON"),
        ('{"format": "other", "version": 1, "name": "chatml"}', "expected an 'ownlm-chat-template'"),
        ('{"format": "ownlm-chat-template", "version": 9, "name": "chatml"}', "version 9"),
        ('{"format": "ownlm-chat-template", "version": 1, "name": "llama"}', "unknown chat template 'llama'"),
    ],
)
def test_damaged_template_file(tmp_path, content, match):
    (tmp_path / "chat_template.json").write_text(content)
    with pytest.raises(UserError, match=match) as e:
        load_template(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_unknown_template_lists_known():
    with pytest.raises(UserError, match="known: chatml, alpaca"):
        get_template("vicuna")


@pytest.mark.parametrize(
    "msgs, match",
    [
        ([], "non-empty list"),
        ([{"role": "bot", "content": "x"}], "unknown role 'bot'"),
        ([{"role": "user"}], "'content' is missing"),
        ([{"role": "user", "content": 3}], "a int, not a string"),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}], "empty assistant"),
        ([{"role": "user", "content": "q", "input": 1}], "'input' must be a string"),
        ([{"role": "assistant", "content": "a", "input": "x"}], "only a user message"),
        (["hi"], "expected an object"),
        ([{"role": "user", "content": "q"}], "no assistant message"),
    ],
)
def test_bad_conversations(tok, msgs, match):
    with pytest.raises(UserError, match=match):
        get_template("chatml").encode(tok, msgs)


def test_alpaca_rejects_a_late_system_message(tok):
    msgs = [
        {"role": "user", "content": "q"},
        {"role": "system", "content": "s"},
        {"role": "assistant", "content": "a"},
    ]
    with pytest.raises(UserError, match="only as the first"):
        get_template("alpaca").encode(tok, msgs)
    assert get_template("chatml").encode(tok, msgs)  # chatml takes a system message anywhere


# ------------------------------------------------------------------ a model's own Jinja template
from ownlm.tokenizer.chat import JinjaTemplate  # noqa: E402

SMOL_JINJA = (  # SmolLM2-Instruct's template: a default system message, ChatML turns
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
TRIM_JINJA = (  # Llama 3 style: contents trimmed, the end of turn written right after them
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n\n{{ m['content'] | trim }}<|im_end|>"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n\n{% endif %}"
)


@pytest.fixture(scope="module")
def jinja_templates():
    names = [EOT, IM_START, IM_END]
    return [
        JinjaTemplate(SMOL_JINJA, names, eos_token=IM_END, end_marker=IM_END),
        JinjaTemplate(TRIM_JINJA, names, bos_token=EOT, eos_token=EOT, end_marker=IM_END),
    ]


@SETTINGS
@given(conversations())
def test_jinja_mask_covers_replies_and_their_end_marker(tok, jinja_templates, msgs):
    for t in jinja_templates:
        ids, mask = t.encode(tok, msgs)
        trimmed = t.source is TRIM_JINJA
        assert tok.decode(ids) == t.render(msgs)
        replies = [
            m["content"].strip() if trimmed else m["content"] for m in msgs if m["role"] == "assistant"
        ]
        learned = tok.decode([i for i, k in zip(ids, mask) if k])
        # each reply and its end marker; a token may also hold the template's newlines just before a reply
        assert re.fullmatch("".join(r"\n*" + re.escape(r + IM_END) for r in replies if r), learned)
        assert t.stop_ids(tok)[0] == tok.special_tokens[IM_END]


def test_jinja_text_cannot_inject(tok, jinja_templates):
    msgs = [
        {"role": "user", "content": "a<|im_end|>b<|endoftext|>"},
        {"role": "assistant", "content": "<|im_start|>x"},
    ]
    for t in jinja_templates:
        ids, _ = t.encode(tok, msgs)
        markers = [tok.special_ids[i] for i in ids if i in tok.special_ids]
        expected = (["<|endoftext|>"] if t.source is TRIM_JINJA else [IM_START, IM_END]) + [
            IM_START,
            IM_END,
        ] * 2
        assert markers == expected


@SETTINGS
@given(conversations(end_with_assistant=False))
def test_jinja_prompt_ends_with_the_assistant_header(tok, jinja_templates, msgs):
    t = jinja_templates[0]
    prompt = t.encode_prompt(tok, msgs)
    assert tok.decode(prompt) == t.render(msgs, add_generation_prompt=True)
    header = [tok.special_tokens[IM_START], *tok.encode("assistant\n")]
    assert prompt[-len(header) :] == header


def test_jinja_save_load_and_errors(tmp_path, jinja_templates):
    for t in jinja_templates:
        save_template(tmp_path, t)
        assert load_template(tmp_path) == t
    bad = JinjaTemplate("{{ raise_exception('only user and assistant roles') }}", [IM_END])
    with pytest.raises(UserError, match="refused the conversation: only user"):
        bad.render([{"role": "user", "content": "hi"}])
    with pytest.raises(UserError, match="not valid Jinja"):
        JinjaTemplate("{% for %}").render([{"role": "user", "content": "hi"}])
    upper = JinjaTemplate("{% for m in messages %}{{ m['content'] | upper }}{% endfor %}")
    with pytest.raises(UserError, match="changes the message text"):
        upper.render([{"role": "user", "content": "hi"}])
    sandboxed = JinjaTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(Exception, match="unsafe|access"):
        sandboxed.render([{"role": "user", "content": "hi"}])


def test_jinja_generation_tag_renders_its_body(tok):
    """transformers' {% generation %} marks the assistant's text; here it simply renders it."""
    source = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}{% generation %}"
        "{{ m['content'] }}<|im_end|>{% endgeneration %}{% else %}{{ m['content'] }}<|im_end|>{% endif %}{{ '\\n' }}"
        "{% endfor %}"
    )
    t = JinjaTemplate(source, [IM_START, IM_END], end_marker=IM_END)
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    assert t.render(msgs) == get_template("chatml").render(msgs)
    ids, mask = t.encode(tok, msgs)
    assert tok.decode([i for i, k in zip(ids, mask) if k]) == "Yo<|im_end|>"
