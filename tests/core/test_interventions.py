import torch

from ccapo.interventions import additive_mask, branch, counterfactual, visibility

IDS = list(range(100, 112))  # positions 0..11; answer starts at 9


def test_counterfactual_forms():
    assert counterfactual(IDS, 9, (3, 5), "pad", 0).ids == [100, 101, 102, 0, 0, 105, 106, 107, 108, 109, 110, 111]
    deleted = counterfactual(IDS, 9, (3, 5), "delete", 0)
    assert deleted.ids == [100, 101, 102, 105, 106, 107, 108, 109, 110, 111]
    assert deleted.answer_start == 7
    hidden = counterfactual(IDS, 9, (3, 5), "attention", 0)
    assert hidden.ids == IDS and hidden.hidden == (3, 5)


def test_branch_feeds_only_what_changes():
    pad = branch(IDS, 9, (3, 5), "pad", 0)
    assert pad.prefix_len == 3 and pad.tokens == [0, 0, *IDS[5:]]
    attention = branch(IDS, 9, (3, 5), "attention", 0)
    assert attention.prefix_len == 5 and attention.tokens == IDS[5:]
    delete = branch(IDS, 9, (3, 5), "delete", 0)
    assert delete.prefix_len == 3 and delete.tokens == IDS[5:] and delete.answer_start == 7


def test_branch_recomputes_the_state_that_predicts_the_answer():
    # A span ending right at the answer: the state at answer_start - 1 lies before the change.
    delete = branch(IDS, 9, (6, 9), "delete", 0)
    assert delete.answer_start == 6 and delete.prefix_len == 5 and delete.tokens == [IDS[5], *IDS[9:]]
    attention = branch(IDS, 9, (6, 9), "attention", 0)
    assert attention.prefix_len == 8 and attention.tokens == IDS[8:]


def test_visibility_hides_the_span_only_from_later_positions():
    pos = torch.arange(5)[None]
    allowed = visibility(pos, pos, torch.tensor([1]), torch.tensor([3]))[0]
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],  # position 2 is in the span: it still sees the span
            [1, 0, 0, 1, 0],
            [1, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(allowed, expected)
    mask = additive_mask(allowed[None], torch.float32)
    assert mask.shape == (1, 1, 5, 5)
    assert mask[0, 0, 3, 1] == torch.finfo(torch.float32).min and mask[0, 0, 3, 3] == 0
