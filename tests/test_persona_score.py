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
