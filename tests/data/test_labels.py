"""Label summaries fitted on the training items (AdaCon configs: regression-head statistics and the ECDF's labels)."""

from __future__ import annotations

import math
import statistics

import pytest

from monai_contrastive.data import item_labels, label_statistics

ITEMS = [{"image": f"x{i}.png", "label": v} for i, v in enumerate([0.81, 1.02, "0.64", 0.93, 0.77])]


def test_item_labels_are_floats_in_item_order():
    assert item_labels(ITEMS) == [0.81, 1.02, 0.64, 0.93, 0.77]
    assert item_labels([{"image": "a", "ef": 55}], key="ef") == [55.0]


def test_label_statistics_match_the_textbook_formulas():
    values = [0.81, 1.02, 0.64, 0.93, 0.77]
    stats = label_statistics(ITEMS)
    mean = sum(values) / len(values)
    sample_std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))  # ddof=1, as torch.std
    assert stats["count"] == 5
    assert stats["mean"] == pytest.approx(mean, abs=1e-15)
    assert stats["std"] == pytest.approx(sample_std, rel=1e-12)
    assert stats["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)


def test_a_single_item_has_zero_spread_not_nan():
    """One training item: std 0 (the regression head then leaves the scale at 1) instead of NaN."""
    assert label_statistics([{"image": "a", "label": 2.5}]) == {"mean": 2.5, "std": 0.0, "count": 1}


@pytest.mark.parametrize(
    "items, message",
    [
        ([], "empty"),
        ([{"image": "a.png", "label": 1.0}, {"image": "b.png"}], "item 1 .*'b.png'.* no 'label'"),
        ([{"image": "c.png", "label": "high"}], "item 0 .*'c.png'.*not a number"),
        ([{"image": "d.png", "label": float("nan")}], "item 0 .*'d.png'.*nan"),
    ],
)
def test_bad_labels_name_the_item(items, message):
    with pytest.raises(ValueError, match=message):
        label_statistics(items)
