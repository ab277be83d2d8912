"""The composite VLM attention map on hand-set attention tensors (issue 12), and best-over-tokens scoring."""

from __future__ import annotations

import pytest
import torch

from aft_bench.metrics.tokens import best_over_tokens
from aft_bench.models.vlm.composite import composite_weights, grid_to_image, llm_image_weights, vision_patch_matrix


def test_the_sink_is_zeroed_and_the_row_renormalised_before_the_image_positions() -> None:
    # 2 layers x 2 heads x 6 positions: BOS, 4 image tokens (positions 1-4), one text token
    rows = torch.tensor([[[0.5, 0.1, 0.1, 0.2, 0.0, 0.1], [0.7, 0.0, 0.1, 0.0, 0.1, 0.1]],
                         [[0.2, 0.4, 0.0, 0.0, 0.2, 0.2], [0.6, 0.1, 0.1, 0.1, 0.1, 0.0]]])
    mean = rows.mean(dim=(0, 1))  # [0.5, 0.15, 0.075, 0.075, 0.1, 0.1]
    expected = mean[1:5] / (1 - mean[0])
    torch.testing.assert_close(llm_image_weights(rows, [1, 2, 3, 4]), expected)
    torch.testing.assert_close(llm_image_weights(rows, [1, 2, 3, 4]), torch.tensor([0.3, 0.15, 0.15, 0.2]))
    torch.testing.assert_close(llm_image_weights(rows, [1, 2, 3, 4], sink=False), mean[1:5])
    torch.testing.assert_close(llm_image_weights(rows, [4, 1]), expected[[3, 0]])  # the order given is kept


def test_llm_weights_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="layers x heads"):
        llm_image_weights(torch.ones(3, 4), [1])
    with pytest.raises(ValueError, match="positions"):
        llm_image_weights(torch.ones(1, 1, 4) / 4, [1, 4])
    with pytest.raises(ValueError, match="only to the sink"):
        llm_image_weights(torch.tensor([[[1.0, 0.0, 0.0]]]), [1, 2])


def test_the_vision_matrix_drops_cls_renormalises_rows_and_averages_layers() -> None:
    # one head, CLS + 2 patches; layer 1: patches attend to CLS half the time
    layer1 = torch.tensor([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.25, 0.25]]])
    layer2 = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
                           [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])  # two heads: mean = all 0.5
    expected = (torch.tensor([[1.0, 0.0], [0.5, 0.5]]) + torch.full((2, 2), 0.5)) / 2
    torch.testing.assert_close(vision_patch_matrix([layer1, layer2]), expected)
    torch.testing.assert_close(vision_patch_matrix([layer1[:, 1:, 1:]], has_cls=False),
                               torch.tensor([[1.0, 0.0], [0.5, 0.5]]))
    assert torch.allclose(vision_patch_matrix([layer1, layer2]).sum(dim=-1), torch.ones(2))
    with pytest.raises(ValueError, match="at least one"):
        vision_patch_matrix([])


def test_the_product_and_the_grid_order() -> None:
    w = torch.tensor([0.5, 0.5, 0.0, 0.0])
    vision = torch.eye(4)[[1, 0, 3, 2]]  # patch 0 attends to 1, 1 to 0, 2 to 3, 3 to 2
    torch.testing.assert_close(composite_weights(w, vision), torch.tensor([0.5, 0.5, 0.0, 0.0]))
    w2 = torch.tensor([1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(composite_weights(w2, vision), torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert composite_weights(w2, None) is w2
    with pytest.raises(ValueError, match="do not fit"):
        composite_weights(w2, torch.eye(3))
    # row-major: weight 1 on patch index 1 of a 2 x 2 grid is the top-right quadrant
    image = grid_to_image(torch.tensor([0.0, 1.0, 0.0, 0.0]), (2, 2), (2, 2))
    torch.testing.assert_close(image, torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    big = grid_to_image(torch.tensor([0.0, 1.0, 0.0, 0.0]), (2, 2), (8, 8))
    assert big.shape == (8, 8) and big[:4, 4:].mean() > big[4:, :4].mean() and big.argmax() // 8 < 4
    with pytest.raises(ValueError, match="patch grid"):
        grid_to_image(torch.ones(5), (2, 2), (8, 8))


def test_best_over_tokens_known_answers_and_empty_answers() -> None:
    tokens = [{"pg": 0.0, "gini": 0.4, "err": 3.0}, {"pg": 1.0, "gini": 0.2, "err": 1.0}, {"pg": 0.0, "gini": 0.3,
                                                                                         "err": 2.0}]
    direction = {"pg": True, "gini": True, "err": False}
    assert best_over_tokens(tokens, direction) == {"err": 1.0, "gini": 0.4, "pg": 1.0}
    assert best_over_tokens(tokens[:1], direction) == {"err": 3.0, "gini": 0.4, "pg": 0.0}
    assert best_over_tokens([], direction) is None
    with pytest.raises(ValueError, match="token 1"):
        best_over_tokens([{"pg": 1.0}, {"gini": 0.1}], direction)
    with pytest.raises(ValueError, match="no direction"):
        best_over_tokens([{"ap": 1.0}], direction)
