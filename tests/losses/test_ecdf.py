from __future__ import annotations

import io

import pytest
import torch

from monai_contrastive.losses import ECDF


def test_eq5_against_loop():
    train = [0.5, 0.7, 0.7, 0.9, 0.6, 0.8]
    ecdf = ECDF(train)
    queries = torch.tensor([0.4, 0.5, 0.65, 0.7, 0.95, 0.75], dtype=torch.float64)
    expect = [sum(1 for t in train if t <= q) / len(train) for q in queries.tolist()]
    torch.testing.assert_close(ecdf(queries), torch.tensor(expect, dtype=torch.float32))


def test_state_dict_roundtrip_resizes_buffer():
    ecdf = ECDF([3.0, 1.0, 2.0])
    buf = io.BytesIO()
    torch.save(ecdf.state_dict(), buf)
    buf.seek(0)
    fresh = ECDF()
    assert not fresh.fitted
    fresh.load_state_dict(torch.load(buf))
    torch.testing.assert_close(fresh(torch.tensor([2.5])), torch.tensor([2 / 3]))


def test_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        ECDF()(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="index 1"):
        ECDF([1.0, float("nan")])
    with pytest.raises(ValueError, match="no labels"):
        ECDF([])


def test_float32_label_equal_to_training_label_counts_as_tie():
    # labels come out of a DataLoader as float32: 0.7 rounded to float32 is below the float64 0.7 it was fitted on
    ecdf = ECDF([0.5, 0.7, 0.9])
    assert ecdf(torch.tensor([0.7], dtype=torch.float32)).item() == pytest.approx(2 / 3)
