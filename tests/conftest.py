import os

import pytest
import torch


# Nothing in the test suite may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from threads, and two OpenMP pools on two cores slow each other down badly.
torch.set_num_threads(1)


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
def float64_code_position_model():
    """A float64 two-layer model with code position embeddings, its norm weights and code positions perturbed so
    that every parameter matters (fused path and decode tests compare it against its modules)."""
    from flashvideo import FlashVideoConfig, FlashVideoForCausalLM

    config = FlashVideoConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, chunk_size=8,
        text_vocab_size=40, image_vocab_size=60, max_frames=6, image_size=16, code_grid_size=4,
        code_position_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    model = FlashVideoForCausalLM(config).double().eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight") or "code_positions" in name:
                parameter.add_(0.3 * torch.randn_like(parameter))
    return model


@pytest.fixture
def tiny_model(tiny_config):
    from flashvideo import FlashVideoForCausalLM

    torch.manual_seed(0)
    return FlashVideoForCausalLM(tiny_config).eval()


PROMPTS = ["a red circle moving right", "a blue square moving up", "a green triangle moving left"]


@pytest.fixture
def tiny_processor(tiny_config):
    """A processor matching `tiny_config`: word-level text tokenizer and the layout."""
    from flashvideo.processing_flashvideo import FlashVideoProcessor
    from flashvideo.text_tokenizer import build_text_tokenizer

    tokenizer = build_text_tokenizer(PROMPTS, vocab_size=tiny_config.text_vocab_size)
    return FlashVideoProcessor(tokenizer, tiny_config)


@pytest.fixture
def tiny_vq():
    """The image tokenizer matching `tiny_config`: a random 16×16 → 4×4 VQ with 60 codes (= image_vocab_size)."""
    from flashvideo.image_tokenizer import build_vq_model

    torch.manual_seed(0)
    return build_vq_model(16, 4, 60, block_out_channels=(8, 16, 16), norm_num_groups=8, vq_embed_dim=8)


@pytest.fixture
def tiny_pipeline(tiny_model, tiny_processor, tiny_vq):
    from flashvideo import FlashVideoPipeline

    return FlashVideoPipeline(
        model=tiny_model, processor=tiny_processor, vqvae=tiny_vq, device="cpu", show_progress=False
    )


@pytest.fixture
def shapes_sized_pipeline():
    """A random-weight pipeline for 64×64 Shapes clips (4×4 codes of 16 px), as the evaluation needs."""
    from flashvideo import FlashVideoConfig
    from flashvideo.evaluation.bench_video import random_pipeline

    config = FlashVideoConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, code_grid_size=4,
        image_vocab_size=64,
    )  # fmt: skip
    return random_pipeline(config)


@pytest.fixture
def tiny_benchmark_pipeline():
    """A one-layer random pipeline over 16×16 frames (4×4 codes), 16 serial numbers: the benchmarks' tests run on it."""
    from flashvideo import FlashVideoConfig, FlashVideoForCausalLM, FlashVideoPipeline
    from flashvideo.image_tokenizer import build_vq_model
    from flashvideo.processing_flashvideo import FlashVideoProcessor
    from flashvideo.text_tokenizer import build_text_tokenizer

    config = FlashVideoConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, text_vocab_size=40,
        image_vocab_size=60, max_frames=16, image_size=16, code_grid_size=4,
    )  # fmt: skip
    torch.manual_seed(0)
    vq = build_vq_model(16, 4, 60, block_out_channels=(8, 16, 16), norm_num_groups=8, vq_embed_dim=8)
    tokenizer = build_text_tokenizer(["a red circle moving right"], vocab_size=40)
    return FlashVideoPipeline(
        model=FlashVideoForCausalLM(config).eval(), processor=FlashVideoProcessor(tokenizer, config), vqvae=vq,
        device="cpu", show_progress=False,
    )  # fmt: skip
