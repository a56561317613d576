"""Label protocols on crafted logits: identity, A/R class restriction, ObjectNet projection."""

from __future__ import annotations

import pytest
import torch

from robustft.labels import (
    class_subset_protocol,
    identity_protocol,
    imagenet_protocol,
    imagenet_synsets,
    legacy_protocol,
    projection_protocol,
    timm_subset_info,
)


def test_identity_protocol_returns_logits_unchanged() -> None:
    protocol = identity_protocol(4, class_names=["a", "b", "c", "d"])
    logits = torch.randn(3, 4)
    assert protocol.scores(logits) is logits
    assert protocol.num_classes == 4 and protocol.label == "standard:4-way"


@pytest.mark.parametrize("subset", ["a", "r"])
def test_subset_protocol_scores_only_the_200_classes(subset: str) -> None:
    indices, wnids = timm_subset_info(subset)
    protocol = class_subset_protocol(subset)
    assert protocol.num_classes == 200 and protocol.class_names == tuple(wnids)
    outside = next(i for i in range(1000) if i not in set(indices))
    logits = torch.zeros(1, 1000)
    logits[0, outside] = 100.0  # the model's favourite class is not one of the 200
    logits[0, indices[17]] = 5.0
    logits[0, indices[3]] = 4.0
    scores = protocol.scores(logits)
    assert scores.shape == (1, 200)
    assert scores.argmax(1).item() == 17
    assert scores.topk(2).indices.tolist() == [[17, 3]]
    # The 1000-way (legacy) protocol would have picked the outside class.
    assert legacy_protocol().scores(logits).argmax(1).item() == outside


def test_subset_lists_match_imagenet_order() -> None:
    synsets = imagenet_synsets()
    for subset in ("a", "r"):
        indices, wnids = timm_subset_info(subset)
        assert [synsets[i] for i in indices] == wnids
    a_wnids = set(timm_subset_info("a")[1])
    r_wnids = set(timm_subset_info("r")[1])
    assert len(a_wnids & r_wnids) == 86  # docs/method.md §5: A and R share 86 wnids


def test_projection_takes_max_over_mapped_classes() -> None:
    # class 0 <- ImageNet {5, 9}; class 1 <- {2}; class 2 <- {7, 1, 3}
    protocol = projection_protocol([[5, 9], [2], [7, 1, 3]], name="toy", num_inputs=10)
    logits = torch.tensor(
        [
            [0, 0, 3, 0, 0, 1, 0, 0, 0, 4],  # class 0 via its SECOND mapped logit
            [0, 2, 1, 0, 0, 0, 0, 0, 0, 0],  # class 2 via logit 1
            [9, 0, 1, 0, 0, 0, 0, 0, 0, 0],  # unmapped logit 0 is ignored -> class 1
        ],
        dtype=torch.float32,
    )
    scores = protocol.scores(logits)
    assert scores.tolist() == [[4, 3, 0], [0, 1, 2], [0, 1, 0]]
    assert scores.argmax(1).tolist() == [0, 2, 1]


def test_wrong_logit_width_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"expects logits of shape \(batch, 1000\)"):
        imagenet_protocol().scores(torch.zeros(2, 10))


def test_unknown_protocol_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown protocol 'official'"):
        imagenet_protocol("official")  # type: ignore[arg-type]


def test_projection_rejects_out_of_range_columns() -> None:
    with pytest.raises(ValueError, match="outside"):
        projection_protocol([[0, 1000]], name="bad")
