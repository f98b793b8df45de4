"""Padded batches (advlab.attacks.padding): few distinct sizes, bounded waste, unchanged results."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from advlab.attacks.padding import SIZES_PER_DOUBLING, PaddedBatches, padded_size


@given(st.integers(1, 5000), st.integers(1, 5000))
def test_padded_size_bounds_the_waste_and_respects_the_cap(n, cap):
    size = padded_size(n, cap)
    assert size >= n
    assert size <= max(n, cap)
    assert size <= n * (1 + 1 / SIZES_PER_DOUBLING)


def test_a_shrinking_batch_only_ever_runs_at_a_few_sizes():
    sizes = {padded_size(n, 500) for n in range(1, 501)}
    # 8 per doubling from 8 to 512 (6 doublings) plus the 8 sizes below: bounded whatever the run length.
    assert len(sizes) <= 8 + 6 * SIZES_PER_DOUBLING
    assert padded_size(500, 500) == 500 and padded_size(300, 500) == 320 and padded_size(33, 500) == 36


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 70))
def test_outputs_and_input_gradients_are_those_of_the_unpadded_model(n):
    torch.manual_seed(n)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.Tanh(), nn.Linear(5, 3))
    padded = PaddedBatches(model, cap=64)
    x = torch.randn(n, 3, 4, requires_grad=True)
    out = model(x)
    g, = torch.autograd.grad(out.square().sum(), x)
    out_p = padded(x)
    g_p, = torch.autograd.grad(out_p.square().sum(), x)
    assert out_p.shape == out.shape
    torch.testing.assert_close(out_p, out)
    torch.testing.assert_close(g_p, g)
