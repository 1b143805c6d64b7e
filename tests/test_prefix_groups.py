"""Which prompts of a batch are prefilled as a group (token lists only, no model)."""

from __future__ import annotations

from malt_lake.backends.prefix_groups import MIN_GROUP_PREFIX, PrefixGroups, prefix_groups


def tokens(start: int, count: int) -> list[int]:
    return list(range(start, start + count))


def members(groups: PrefixGroups) -> list[set[int]]:
    return sorted(({i for i, g in enumerate(groups.group_of) if g == group}
                   for group in range(len(groups.shared))), key=min)


def test_a_questions_chains_share_the_question_and_keep_their_own_answers():
    question = tokens(1000, 40)
    prompts = [question + tokens(2000 + 100 * c, 30) for c in range(3)]
    prompts += [tokens(5000, 50), tokens(6000, 45)]
    groups = prefix_groups(prompts)
    assert members(groups) == [{0, 1, 2}]
    assert groups.shared == [40] and groups.group_of[3:] == [-1, -1]
    assert groups.tokens([len(p) for p in prompts]) == 40 + 3 * 30 + 50 + 45


def test_an_answers_critiques_are_grouped_apart_from_the_other_answers():
    """Nine refinement prompts of one question: three answers, three critiques of each.
    Three groups sharing question + answer save more than one group sharing the question."""
    question = tokens(1000, 30)
    prompts = [question + tokens(2000 + 1000 * a, 80) + tokens(9000 + 100 * c, 20)
               for a in range(3) for c in range(3)]
    groups = prefix_groups(prompts)
    assert members(groups) == [{0, 1, 2}, {3, 4, 5}, {6, 7, 8}]
    assert groups.shared == [110, 110, 110]


def test_identical_prompts_keep_one_token_each():
    """An evaluation's chains of one question ask the generator the same prompt."""
    prompt = tokens(1000, 60)
    groups = prefix_groups([prompt, prompt, prompt, tokens(3000, 20)])
    assert members(groups) == [{0, 1, 2}] and groups.shared == [59]


def test_no_group_when_nothing_past_the_minimum_is_shared():
    short = MIN_GROUP_PREFIX - 1
    assert prefix_groups([tokens(1000, short) + tokens(2000 + 100 * i, 50)
                          for i in range(4)]) is None
    assert prefix_groups([tokens(1000 * i, 50) for i in range(1, 5)]) is None
    assert prefix_groups([tokens(1000, 50)]) is None


def test_no_group_when_it_saves_too_little():
    """Grouping runs one more pass and pads the groups' part for every row: it waits for a
    fifth of the tokens saved. Two prompts sharing 20 tokens of 150 in all save 13 %."""
    prompts = [tokens(1000, 20) + tokens(2000, 30), tokens(1000, 20) + tokens(3000, 30),
               tokens(5000, 50)]
    assert prefix_groups(prompts) is None
    # sharing 40 tokens of 120 saves a third
    assert prefix_groups([tokens(1000, 40) + tokens(2000, 10),
                          tokens(1000, 40) + tokens(3000, 10), tokens(5000, 20)]) is not None
