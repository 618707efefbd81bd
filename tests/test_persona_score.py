"""The persona report's "sounds like them" classifier: trained on one side's style against the other's."""

import random

import pytest

from ownlm.finetune.persona_score import person_probability, style_classifier

pytest.importorskip("sklearn")


def _texts(rng, words, n, shout):
    out = []
    for _ in range(n):
        t = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
        out.append(t.upper() + "!!" if shout else t + ".")
    return out


def test_style_classifier_tells_a_distinct_voice_and_counts_empty_replies_as_not_theirs():
    rng = random.Random(0)
    words = "tea later maybe sure fine thanks see you soon where home now great".split()
    person, others = _texts(rng, words, 60, True), _texts(rng, words, 120, False)
    clf = style_classifier(person, others)
    held_person, held_others = _texts(rng, words, 20, True), _texts(rng, words, 20, False)
    assert sum(p > 0.5 for p in person_probability(clf, held_person)) >= 18
    assert sum(p > 0.5 for p in person_probability(clf, held_others)) <= 2
    assert person_probability(clf, ["", "  "]) == [0.0, 0.0]


def test_the_time_budget_cuts_sampling_alike_for_every_model_and_the_report_says_so(tmp_path, monkeypatch):
    """A fake clock: each sampled reply takes 10 s. With one minute for two models, each gets half of what is
    left: the first answers 3 contexts, the second the same 3; metrics and report say 3 of 8 were answered."""
    import json

    import ownlm.chat
    import ownlm.finetune.score
    from ownlm.finetune.persona_score import PersonaScoreConfig, score_persona, write_persona_report

    def conv(i, who):
        return {"messages": [{"role": "user", "content": f"question {i}?"},
                             {"role": "assistant", "content": f"{who} answer {i}"}]}  # fmt: skip

    persona = tmp_path / "persona"
    persona.mkdir()
    for name, who, n in (("val", "ann", 8), ("train", "ANN", 10), ("others", "bob", 10)):
        (persona / f"{name}.jsonl").write_text("".join(json.dumps(conv(i, who)) + "\n" for i in range(n)))
    now = [0.0]
    calls = []

    def fake_sample(model, tok, template, examples, sampling, seed, progress=True):
        now[0] += 10.0 * len(examples)
        calls.append((model, seed))
        return [{"reply": f"reply {seed}"} for _ in examples]

    monkeypatch.setattr(ownlm.chat, "load_chat_model", lambda run, device: (run, None, None))
    monkeypatch.setattr(ownlm.chat, "sample_replies", fake_sample)
    monkeypatch.setattr(ownlm.finetune.score, "score_examples", lambda *a: ([], None, None))
    monkeypatch.setattr(ownlm.finetune.score, "pooled_loss", lambda rows: 1.0)
    out = tmp_path / "out"
    out.mkdir()
    cfg = PersonaScoreConfig(persona=str(persona), model="P", everyone="E", out=str(out), max_minutes=1.0)
    metrics = score_persona(cfg, clock=lambda: now[0])
    assert metrics["replies_sampled"] == 3 and metrics["replies_cut"] == {"planned": 8, "max_minutes": 1.0}
    assert [m for m, _ in calls] == ["E"] * 3 + ["P"] * 3
    assert [s for _, s in calls] == [0, 1, 2] * 2  # the same contexts, with the same seeds, for both models
    rows = [json.loads(line) for line in (out / "replies.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["persona"] == "reply 0"
    report = write_persona_report(out, metrics, rows).read_text()
    assert "stopped at the stage's time budget (1 minutes): 3 of 8" in report
    now[0], calls[:] = 0.0, []  # no budget: every context, no note
    metrics = score_persona(PersonaScoreConfig(persona=str(persona), model="P", everyone="E", out=str(out)),
                            clock=lambda: now[0])  # fmt: skip
    assert metrics["replies_sampled"] == 8 and "replies_cut" not in metrics and len(calls) == 16
