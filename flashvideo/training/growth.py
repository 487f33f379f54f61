"""
Growing a trained FlashVideo model deeper without changing what it computes, so that a larger model can be
fine-tuned from a smaller one's weights instead of trained from scratch (on a CPU, weeks of steps).

Each new RetNet block is a copy of the block before it with its two output projections (retention `o_proj`, GLU
`down_proj`) set to zero. A block adds `o_proj(...)` and `down_proj(...)` to the residual stream, so a new one adds
nothing and the grown model's logits equal the original's; its input projections are trained weights rather than
noise, and the zero projections get non-zero gradients from the first step (their inputs are not zero), so the
block starts learning at once. This is the function-preserving "deeper" operation of Net2Net (Chen et al., 2016) in
its residual form.

Example:
    >>> from flashvideo import FlashVideoConfig, FlashVideoForCausalLM
    >>> small = FlashVideoForCausalLM(FlashVideoConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2))
    >>> deep = deepen(small, 4)
    >>> deep.config.num_hidden_layers
    4
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> torch.allclose(deep(ids).logits, small(ids).logits, atol=1e-6)
    True
"""

from __future__ import annotations

import torch

from ..configuration_flashvideo import FlashVideoConfig
from ..modeling_flashvideo import FlashVideoForCausalLM

# The parameters through which a block writes into the residual stream; zero makes the block an identity.
OUTPUT_PROJECTIONS = ("retention.o_proj.weight", "ffn.down_proj.weight")


def grown_layer_sources(num_layers: int, num_hidden_layers: int) -> list[int]:
    """For each block of the grown model, the original block it is copied from: the original blocks keep their order
    and the new ones are spread evenly among them, each after the block it copies (4 -> 8: 0 0' 1 1' 2 2' 3 3')."""
    if not isinstance(num_hidden_layers, int) or isinstance(num_hidden_layers, bool) or num_hidden_layers < num_layers:
        raise ValueError(
            f"num_hidden_layers must be an integer >= the model's {num_layers} blocks, got {num_hidden_layers!r}"
        )
    # Block i of the original gets copies_i copies; the first (num_hidden_layers mod num_layers) blocks one more.
    per_block, extra = divmod(num_hidden_layers, num_layers)
    return [i for i in range(num_layers) for _ in range(per_block + (i < extra))]


@torch.no_grad()
def deepen(model: FlashVideoForCausalLM, num_hidden_layers: int) -> FlashVideoForCausalLM:
    """A new model with `num_hidden_layers` RetNet blocks that computes what `model` does (see the module docstring);
    `model` is left unchanged. Everything but the blocks (embeddings, code positions, norm, LM head) is copied."""
    sources = grown_layer_sources(model.config.num_hidden_layers, num_hidden_layers)
    config = FlashVideoConfig(**{**model.config.to_dict(), "num_hidden_layers": num_hidden_layers})
    grown = FlashVideoForCausalLM(config).to(dtype=model.dtype, device=model.device)
    state = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("model.layers.")}
    for index, source in enumerate(sources):
        is_copy = index > 0 and sources[index - 1] == source  # the copies follow the block they copy
        for name, tensor in model.model.layers[source].state_dict().items():
            zero = is_copy and name in OUTPUT_PROJECTIONS
            state[f"model.layers.{index}.{name}"] = torch.zeros_like(tensor) if zero else tensor.clone()
    grown.load_state_dict(state, strict=True)
    grown.generation_config = model.generation_config
    return grown.train(model.training)
