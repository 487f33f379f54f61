"""Dead-code restarts keep the VQ codebook alive during tokenizer training."""

import pytest
import torch
from accelerate import Accelerator
from diffusers.models.autoencoders.vae import VectorQuantizer

from flashvideo.training.codebook import CodebookRestarter


def _quantizer(num_codes: int = 16, dim: int = 4) -> VectorQuantizer:
    torch.manual_seed(0)
    quantizer = VectorQuantizer(num_codes, dim, beta=0.25, legacy=False)
    with torch.no_grad():  # every code far from the data but code 0: one code wins every position
        quantizer.embedding.weight.fill_(100.0)
        quantizer.embedding.weight[0].zero_()
    return quantizer.train()


def _codes_picked(quantizer: VectorQuantizer, latents: torch.Tensor) -> int:
    return quantizer(latents)[2][2].unique().numel()


def test_dead_codes_move_onto_encoder_outputs():
    quantizer = _quantizer()
    restarter = CodebookRestarter(quantizer, threshold=1.0, seed=0)
    latents = torch.randn(2, 4, 8, 8)  # 128 encoder outputs of dimension 4
    assert _codes_picked(quantizer, latents) == 1

    restarter.after_step(Accelerator(cpu=True), global_step=1)

    assert restarter.restarted == 15  # all but code 0
    outputs = latents.permute(0, 2, 3, 1).reshape(-1, 4)
    for code in quantizer.embedding.weight[1:]:
        assert (outputs - code).abs().amax(dim=1).min() == 0  # each new code is one of the outputs
    assert _codes_picked(quantizer, latents) > 8


def test_restarts_are_seeded_and_stop_when_asked():
    weights = []
    for _ in range(2):
        quantizer = _quantizer()
        restarter = CodebookRestarter(quantizer, seed=3)
        quantizer(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1)))
        restarter.after_step(Accelerator(cpu=True), global_step=5)
        weights.append(quantizer.embedding.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)

    quantizer = _quantizer()
    late = CodebookRestarter(quantizer, stop_after_step=10)
    quantizer(torch.randn(1, 4, 8, 8))
    late.after_step(Accelerator(cpu=True), global_step=11)
    assert late.restarted == 0 and late.usage[0] > 0  # usage still tracked


def test_state_round_trip_and_bad_arguments():
    quantizer = _quantizer()
    restarter = CodebookRestarter(quantizer)
    quantizer(torch.randn(1, 4, 8, 8))
    restarter.after_step(Accelerator(cpu=True), global_step=1)
    copy = CodebookRestarter(_quantizer())
    copy.load_state_dict(restarter.state_dict())
    torch.testing.assert_close(copy.usage, restarter.usage)
    assert copy.restarted == restarter.restarted
    with pytest.raises(ValueError, match="threshold"):
        CodebookRestarter(_quantizer(), threshold=-1)
    with pytest.raises(ValueError, match="decay"):
        CodebookRestarter(_quantizer(), decay=1.0)
