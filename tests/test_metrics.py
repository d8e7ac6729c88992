"""Metrics against values worked out by hand."""

import math

import numpy as np
import pytest
import torch

from speechssl.metrics import (code_perplexity, codebook_perplexity, cooccurrence, phone_error_rate,
                               unit_quality, unit_quality_from_counts)


def test_unit_quality_hand_example():
    # 6 frames, 3 phones, 2 units.   counts[y, z] = [[2, 1], [0, 2], [0, 1]]
    phones = np.array([0, 0, 0, 1, 1, 2])
    units = np.array([0, 0, 1, 1, 1, 1])
    assert cooccurrence(phones, units).tolist() == [[2, 1], [0, 2], [0, 1]]
    q = unit_quality(phones, units)
    # phone purity = sum_z max_y p(y,z) = 2/6 + 2/6
    assert q.phone_purity == pytest.approx(4 / 6)
    # cluster purity = sum_y max_z p(y,z) = 2/6 + 2/6 + 1/6
    assert q.cluster_purity == pytest.approx(5 / 6)
    # I(y;z) = 1/3 ln2 - 1/6 ln2 + 1/3 ln1.5 + 1/6 ln1.5 ; H(y) = 1/2 ln2 + 1/3 ln3 + 1/6 ln6
    mi = math.log(2) / 6 + math.log(1.5) / 2
    h = math.log(2) / 2 + math.log(3) / 3 + math.log(6) / 6
    assert q.pnmi == pytest.approx(mi / h)
    assert q.num_frames == 6 and q.used_units == 2


def test_unit_quality_extremes():
    phones = np.repeat(np.arange(5), 10)
    perfect = unit_quality(phones, phones + 3)          # a relabelling of the phones
    assert perfect.pnmi == pytest.approx(1.0)
    assert perfect.phone_purity == pytest.approx(1.0) and perfect.cluster_purity == pytest.approx(1.0)
    one_unit = unit_quality(phones, np.zeros_like(phones))  # everything in one cluster
    assert one_unit.pnmi == pytest.approx(0.0)
    assert one_unit.phone_purity == pytest.approx(0.2) and one_unit.cluster_purity == pytest.approx(1.0)
    # independent labels: a unit per (frame mod 10) repeats the same phone mix in every unit
    indep = unit_quality(phones, np.tile(np.arange(10), 5))
    assert indep.pnmi == pytest.approx(0.0, abs=1e-12)


def test_unit_quality_errors():
    with pytest.raises(ValueError, match="one entry per frame"):
        unit_quality(np.zeros(3, int), np.zeros(4, int))
    with pytest.raises(ValueError, match="empty"):
        unit_quality(np.zeros(0, int), np.zeros(0, int))
    with pytest.raises(ValueError, match="non-negative"):
        unit_quality(np.array([0, -100]), np.array([0, 1]))
    with pytest.raises(ValueError, match="empty"):
        unit_quality_from_counts(np.zeros((2, 2)))


def test_codebook_perplexity():
    uniform = torch.full((7, 2, 4), 0.25)
    assert codebook_perplexity(uniform).tolist() == pytest.approx([4.0, 4.0])
    collapsed = torch.nn.functional.one_hot(torch.zeros(9, dtype=torch.long), 4).float()
    assert codebook_perplexity(collapsed).tolist() == pytest.approx([1.0])
    # average distribution [0.5, 0.5, 0, 0] -> perplexity exp(ln 2) = 2
    codes = torch.tensor([0, 1, 0, 1])
    assert code_perplexity(codes, 4).tolist() == pytest.approx([2.0])
    # two groups, hard codes: group 0 uses 4 entries evenly, group 1 one entry
    codes = torch.tensor([[0, 3], [1, 3], [2, 3], [3, 3]])
    assert code_perplexity(codes, 4).tolist() == pytest.approx([4.0, 1.0])
    with pytest.raises(ValueError, match="shape"):
        codebook_perplexity(torch.zeros(2, 2, 2, 2))


def test_phone_error_rate():
    refs = [["a", "b", "c", "d"], ["x", "y"]]
    hyps = [["a", "q", "c"], ["x", "y", "z"]]   # 1 sub + 1 del ; 1 ins
    per = phone_error_rate(refs, hyps)
    assert (per.errors, per.reference_length) == (3, 6)
    assert per.rate == pytest.approx(0.5)
    assert phone_error_rate([["a"]], [["a"]]).rate == 0.0
    with pytest.raises(ValueError, match="as many"):
        phone_error_rate([["a"]], [])
