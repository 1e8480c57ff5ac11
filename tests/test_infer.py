"""Tests of fluoseg.infer internals (the Segmenter itself is exercised in test_predict.py)."""

from __future__ import annotations

import copy

import numpy as np
import torch

from fluoseg.infer import make_batch_predictor
from fluoseg.models import build_model


def test_batch_predictor_runs_channels_last_with_the_same_outputs():
    torch.manual_seed(0)
    model = build_model("unet", in_channels=2, out_channels=3, depth=2, base_filters=4, padding="same").eval()
    reference = copy.deepcopy(model)
    batch = np.random.default_rng(0).normal(size=(2, 2, 32, 32)).astype(np.float32)
    predict = make_batch_predictor(model, np.ones(2, np.float32), lambda logits: torch.softmax(logits, 1))
    kernels = [p for p in model.parameters() if p.dim() == 4 and p.shape[-1] == 3]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    assert not all(p.is_contiguous() for p in kernels)  # really NHWC, not a trivially contiguous shape
    with torch.inference_mode():
        expected = torch.softmax(reference(torch.from_numpy(batch), torch.ones(2, 2)), 1).numpy()
    np.testing.assert_allclose(predict(batch), expected, atol=1e-5)
