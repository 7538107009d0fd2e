"""Parsing, candidate draws, -R budgets, prompt templates and the likelihood pick rule of `aclbuild generate`."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from aclbuild.errors import InputError
from aclbuild.labeling import budgets
from aclbuild.labeling.candidates import reshuffled, uniform_candidates
from aclbuild.labeling.llava import kv_bytes_per_token
from aclbuild.labeling.packing import answer_scores, choose, pack_suffixes
from aclbuild.labeling.parsing import parse_answer
from aclbuild.labeling.prompts import load_template

OPTIONS = ["airplane", "truck", "cat", "ship"]


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("Truck.", 1), ("  cat ", 2), ("trucks", 1), ("The answer is ship", 3), ("air plane", 0),
        ("cat or truck", None), ("", None), ("horse", None), ("...", None),
    ],
)  # fmt: skip
def test_parse_complementary_answers(answer, expected):
    assert parse_answer(answer, OPTIONS) == expected


def test_parse_numbered_and_loose_forms():
    names = ["tabby", "persian cat", "gazelle"]
    assert parse_answer("(2) persian cat", names) == 1
    assert parse_answer("(3)", names) == 2
    assert parse_answer("1", names) == 0
    assert parse_answer("7", names) is None  # out of range
    assert parse_answer("cat persian", names) == 1  # word order
    assert parse_answer("fruit, vegetables and mushrooms", ["fruit vegetables and mushrooms", "fish"]) == 0
    # digits' class names are numbers: in complementary mode a bare number is a name, not a position
    assert parse_answer("3", ["7", "3", "0", "5"]) == 1


def test_uniform_candidates_are_distinct_seeded_and_uniform():
    draws = [uniform_candidates(1126, i, r, 10) for i in range(500) for r in range(3)]
    assert all(len(set(d)) == 4 for d in draws)
    assert draws[7] == uniform_candidates(1126, 2, 1, 10)  # (image 2, round 1) again: the same draw
    assert uniform_candidates(1127, 2, 1, 10) != draws[7] or uniform_candidates(1127, 3, 1, 10) != draws[10]
    counts = Counter(c for d in draws for c in d)
    assert max(counts.values()) / min(counts.values()) < 1.25  # 6,000 draws over 10 classes
    first = Counter(d[0] for d in draws)
    assert len(first) == 10  # the order shown is random too, not sorted
    again = reshuffled(draws[0], 1126, 0, 0, attempt=3)
    assert sorted(again) == sorted(draws[0]) and reshuffled(draws[0], 1126, 0, 0, 0) == draws[0]


def test_budgets_floor_and_distinct_candidates():
    initial = budgets.initial_budgets(num_images=100, num_classes=10, rounds=3)
    assert initial.tolist() == [30] * 10
    after = budgets.budgets_after(initial, np.array([25, 0, 30, 5, 0, 0, 0, 0, 0, 0]))
    assert after.tolist()[:4] == [10, 30, 10, 25]  # never below 10
    drawn = [budgets.budget_candidates(after, [1, 3], 1126, i, 2) for i in range(300)]
    assert all(len(set(d)) == 4 and not {1, 3} & set(d) for d in drawn)
    share = Counter(c for d in drawn for c in d)
    assert share[5] > share[0]  # budget 30 beats budget 10
    with pytest.raises(InputError, match="K - 3"):
        budgets.check_rounds(8, 10)
    budgets.check_rounds(7, 10)
    blocks = budgets.visit_blocks(list(range(200)), 1126)
    assert sorted(i for b in blocks for i in b) == list(range(200)) and len(blocks[0]) == budgets.BLOCK


def test_templates_default_custom_and_refused(tmp_path):
    cl = load_template("cl", None)
    prompt = cl.prompt(["cat", "dog", "ship", "frog"])
    assert prompt.startswith("[INST] <image>\nWhich label does not belong to this image?")
    assert prompt.endswith("single word from [cat, dog, ship, frog] [/INST]")
    prefix, suffix = cl.split_prompt(["cat", "dog", "ship", "frog"])
    assert prefix + " " + suffix == prompt and "cat" not in prefix
    ord_prompt = load_template("ord", None).prompt(["cat", "dog"])
    assert "(1) cat (2) dog" in ord_prompt and "only the number" in ord_prompt
    custom = tmp_path / "q.jinja"
    custom.write_text("Which of these is absent: {{ options | join(' / ') }}?", encoding="utf-8")
    mine = load_template("cl", custom)
    assert "a / b" in mine.prompt(["a", "b"]) and mine.sha256 != cl.sha256
    bad = tmp_path / "bad.jinja"
    bad.write_text("Which label does not belong?", encoding="utf-8")
    with pytest.raises(InputError, match="options"):
        load_template("cl", bad)


def _logits(probabilities: dict[int, float], vocab: int = 10):
    import torch

    p = torch.full((vocab,), 1e-3)
    for token, prob in probabilities.items():
        p[token] = prob
    return p.log()


def _choose(answers: list[list[list[int]]], predictions: list) -> list[int]:
    """Pack one query per image (suffix [1, 2]) and choose, with ``predictions[k]`` the logits of predictor k."""
    import torch

    pack = pack_suffixes(list(range(len(answers))), [[1, 2]] * len(answers), answers, images=len(answers))
    logits = torch.zeros(pack.ids.size, 10)
    logits[torch.from_numpy(pack.predictors)] = torch.stack(predictions)
    return choose(pack, *answer_scores(logits.view(*pack.ids.shape, 10), pack)).tolist()


def test_choose_prefers_the_greedy_path():
    # candidate 0 ("5 6") is what greedy decoding says, though candidate 1 ("7") is likelier as a whole
    first = _logits({5: 0.5, 7: 0.45})
    greedy_6, likely_9 = _logits({6: 0.3, 9: 0.2}), _logits({6: 0.2, 9: 0.7})
    # predictors, per image: its suffix's last token, then the "5" fed after it
    assert _choose([[[5, 6], [7]], [[5, 6], [7]]], [first, greedy_6, first, likely_9]) == [0, 1]  # else the likeliest
    # two greedy paths, one the start of the other: the longer is what greedy decoding continues into
    assert _choose([[[5], [5, 6]]], [first, greedy_6]) == [1]
    # single-token answers only; ties go to the earlier candidate
    assert _choose([[[7], [3], [3]]], [_logits({3: 0.6})]) == [1]


def test_packed_suffixes_see_the_prefix_their_suffix_and_themselves():
    # image 0: query 0 (suffix 7 8; answers "5", "6 4"), query 2 (suffix 9); image 1: query 1 (suffix 3)
    pack = pack_suffixes([0, 1, 0], [[7, 8], [3], [9]], [[[5], [6, 4]], [[5]], [[5], [6, 4]]], images=2, pad=0)
    assert pack.ids.tolist() == [[7, 8, 6, 9, 6], [3, 0, 0, 0, 0]]
    assert pack.offsets.tolist() == [[0, 1, 2, 0, 1], [0, 0, 0, 0, 0]]
    assert pack.visible[0].astype(int).tolist() == [
        [1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0],  # query 0's suffix, then "6" of its answer "6 4"
        [0, 0, 0, 1, 0], [0, 0, 0, 1, 1],  # query 2's suffix, and its "6"
    ]  # fmt: skip
    assert pack.visible[1].astype(int).tolist() == np.eye(5, dtype=int).tolist()  # padding sees only itself
    # predictors: q0's suffix end (0,1), its "6" (0,2), q1's suffix end (1,0), q2's suffix end (0,3), its "6" (0,4)
    assert pack.predictors.tolist() == [1, 2, 5, 3, 4]
    assert pack.reads[0].tolist() == [[0, -1], [0, 1]] and pack.tokens[0].tolist() == [[5, -1], [6, 4]]
    assert pack.reads[1].tolist() == [[2, -1], [-1, -1]] and pack.reads[2].tolist() == [[3, -1], [3, 4]]
    assert pack.rows.tolist() == [0, 1, 0]


def test_a_pack_split_by_images_reads_the_same_logits():
    """A pass that must hold fewer images (GPU memory) takes part of a pack: the same scores for its queries."""
    import torch

    pack = pack_suffixes([0, 1, 0, 2], [[7, 8], [3], [9], [4, 4]], [[[5], [6, 4]], [[5]], [[5], [6, 4]], [[6, 2]]],
                         images=3)  # fmt: skip
    logits = torch.randn(*pack.ids.shape, 10)
    whole = answer_scores(logits, pack)
    for start, stop, expected in ((0, 1, [0, 2]), (1, 3, [1, 3]), (0, 3, [0, 1, 2, 3])):
        part, queries = pack.take(start, stop)
        assert queries.tolist() == expected and part.rows.tolist() == (pack.rows[queries] - start).tolist()
        scores = answer_scores(logits[start:stop], part)
        for mine, full in zip(scores, whole):
            assert np.array_equal(np.where(part.present, mine, 0), np.where(part.present, full[queries], 0))


def test_kv_bytes_per_token_of_mistral_7b():
    from transformers import MistralConfig

    config = MistralConfig(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32, num_key_value_heads=8)
    assert kv_bytes_per_token(config, 2) == 128 * 1024  # vlm-labeling.md: about 128 KiB per token
