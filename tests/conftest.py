import os

import pytest
import torch


# Nothing in the test suite may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def tiny_config():
    """A FlashVideo config small enough for float64 tests: 4×4 code grid, 60 codes, chunk size 8."""
    from flashvideo import FlashVideoConfig

    return FlashVideoConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        chunk_size=8,
        text_vocab_size=40,
        image_vocab_size=60,
        max_frames=6,
        image_size=16,
        code_grid_size=4,
    )


@pytest.fixture
def tiny_model(tiny_config):
    from flashvideo import FlashVideoForCausalLM

    torch.manual_seed(0)
    return FlashVideoForCausalLM(tiny_config).eval()
