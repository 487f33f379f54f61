"""The decoder's layer stack for inference as one function over the weights, without module calls.

At the shipped model's size (hidden 128, 4 layers) a decode step is a few hundred small operators, and calling them
through `nn.Module`s (`__call__`, hooks, `__getattr__` for every submodule and parameter) costs about as much as
the operators themselves. For inference `FlashVideoModel` runs the same computation here instead:

- the parameters are read once into a `FusedDecoder` (the `Parameter` objects themselves, so in-place updates and
  device moves are seen; nothing is copied);
- each projection is one matrix product, the output projections with the residual added in the same call (`addmm`);
- RMSNorm is five operators without Python scalars turned into tensors on every call.

The model takes this path only where it computes exactly what the modules compute: in eval mode, float32/float64
weights, no hidden states asked for, and every layer still the plain FlashVideo layer with plain `nn.Linear`
projections and no hooks. Adapters (LoRA), quantised layers and accelerate's offloading hooks replace or hook a
module, which `FusedDecoder.matches` and `FusedDecoder.hooked` notice, and the module path runs as before.

Example:

```python
>>> decoder = FusedDecoder.from_model(model.model)  # None if some layer is not a plain FlashVideo layer
>>> hidden, states, keys_and_values = fused_decoder_layers(decoder, embeddings, positions, None, past_states)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn
from transformers.activations import ACT2FN

from .retention import parallel_retention, recurrent_retention, rotate_pairs


if TYPE_CHECKING:
    from .modeling_flashvideo import FlashVideoModel, RetentionPositions


class FusedLayerWeights(NamedTuple):
    """One decoder layer's parameters, as the modules hold them (`[out, in]` projection matrices)."""

    retention_norm: torch.Tensor
    qkvg_proj: torch.Tensor
    o_proj: torch.Tensor
    ffn_norm: torch.Tensor
    gate_up_proj: torch.Tensor
    down_proj: torch.Tensor


# The submodules a layer must hold, and the parameter each contributes, in `FusedLayerWeights` order.
_LAYER_PARAMETERS = (
    (("retention_norm",), "weight"),
    (("retention", "qkvg_proj"), "weight"),
    (("retention", "o_proj"), "weight"),
    (("ffn_norm",), "weight"),
    (("ffn", "gate_up_proj"), "weight"),
    (("ffn", "down_proj"), "weight"),
)


class FusedDecoder:
    """The parameters of a `FlashVideoModel`'s decoder layers and final norm, with what tells whether they are still the model's.

    Built by `from_model` (None when the model is not made of plain FlashVideo layers); the model builds it again
    when it no longer `matches` (a module replaced, a parameter reassigned) and calls its modules while any is
    `hooked`.
    """

    def __init__(self, model: FlashVideoModel):
        from .modeling_flashvideo import FlashVideoDecoderLayer, FlashVideoGLU, FlashVideoMultiScaleRetention

        config = model.config
        self.num_heads, self.head_dim, self.value_head_dim = (
            config.num_attention_heads, config.head_dim, config.value_head_dim
        )  # fmt: skip
        self.split_sizes = (2 * config.hidden_size, config.value_dim, config.value_dim)  # [q; k], v, gate
        self.eps = config.rms_norm_eps
        # (id of a module's `_modules` or `_parameters` dict, a name) -> (that dict, the name, the object expected
        # under it): what `matches` reads, each entry once (the paths to the layers' parameters share first steps).
        self._expected: dict[tuple[int, str], tuple[dict, str, object]] = {}
        _expect(self._expected, model._modules, "layers", model.layers)
        self._modules: list[nn.Module] = [model, model.layers, model.norm]
        expected_types = {
            (): FlashVideoDecoderLayer, ("retention",): FlashVideoMultiScaleRetention, ("ffn",): FlashVideoGLU,
        }  # fmt: skip
        self.layers: list[FusedLayerWeights] = []
        for index, layer in enumerate(model.layers):
            _expect(self._expected, model.layers._modules, str(index), layer)
            for path, expected_type in expected_types.items():
                module = _submodule(layer, path, self._expected)
                if type(module) is not expected_type:
                    raise TypeError(f"layer {index}: {'.'.join(path) or 'the layer'} is a {type(module).__name__}")
            parameters = []
            for path, name in _LAYER_PARAMETERS:
                module = _submodule(layer, path, self._expected)
                if type(module) not in (nn.Linear, type(model.norm)):
                    raise TypeError(f"layer {index}: {'.'.join(path)} is a {type(module).__name__}")
                parameters.append(module._parameters[name])
                _expect(self._expected, module._parameters, name, module._parameters[name])
            self.layers.append(FusedLayerWeights(*parameters))
        # The feed-forward's activation module (`ACT2FN[hidden_act]`), called as a plain function for silu: the module
        # call around it would cost more than the operator.
        activations = [_submodule(layer, ("ffn", "act_fn"), self._expected) for layer in model.layers]
        first = activations[0] if activations else None
        is_silu = isinstance(first, (nn.SiLU, type(ACT2FN["silu"])))
        self.activation = nn.functional.silu if is_silu else getattr(first, "forward", None)
        self._modules += [module for layer in model.layers for module in layer.modules()]
        # The modules' hook dicts themselves, which `register_forward_hook` and `register_forward_pre_hook` fill:
        # `hooked` then tests them in one `any` (0.4 µs against 2.7 µs reading two attributes of 43 modules). A
        # module's dicts are only replaced wholesale when it is unpickled or copied, which makes a new module (and
        # `matches` fails), or for a moment by `torch.export`.
        # The submodules whose `forward` the fused path skips (the model's own runs either way).
        self._skipped: list[nn.Module] = self._modules[1:]
        self._instance_dicts: list[dict] = [vars(module) for module in self._skipped]
        self._hook_dicts: list[dict] = [module._forward_hooks for module in self._modules] + [
            module._forward_pre_hooks for module in self._modules
        ]
        self.norm = model.norm.weight
        _expect(self._expected, model.norm._parameters, "weight", self.norm)
        self._eps_tensor: torch.Tensor | None = None

    @classmethod
    def from_model(cls, model: FlashVideoModel) -> FusedDecoder | None:
        """The decoder of `model`, or None if some layer is not a plain FlashVideo layer (an adapter, a quantised
        projection…), in which case the model keeps calling its modules."""
        try:
            return cls(model)
        except TypeError:
            return None

    def matches(self, model: FlashVideoModel) -> bool:
        """Whether `model` still holds exactly these modules and parameters (none replaced or reassigned)."""
        if (id(model._modules), "layers") not in self._expected:  # a copy of the model carries a copy of its decoder
            return False
        return all(container.get(name) is expected for container, name, expected in self._expected.values())

    def hooked(self) -> bool:
        """Whether any of these modules has a forward hook or a replaced `forward` (accelerate's hooks replace it):
        then the modules must be called, for the hooks to run."""
        hooks = nn.modules.module
        if hooks._global_forward_hooks or hooks._global_forward_pre_hooks or any(self._hook_dicts):
            return True
        # A dict lookup per module; the closer look only where an instance holds a `forward` of its own.
        return any("forward" in attributes for attributes in self._instance_dicts) and any(
            forward_replaced(module) for module in self._skipped
        )

    def eps_like(self, x: torch.Tensor) -> torch.Tensor:
        """RMSNorm's ε as a tensor on `x`'s device and dtype (made once: a Python scalar would become a new tensor
        on every operator call)."""
        eps = self._eps_tensor
        if eps is None or eps.dtype != x.dtype or eps.device != x.device:
            eps = self._eps_tensor = torch.tensor(self.eps, dtype=x.dtype, device=x.device)
        return eps


def forward_replaced(module: nn.Module) -> bool:
    """Whether `module.forward` is not its class's `forward`: set on the instance (accelerate's `add_hook_to_module`,
    any patch). The module's own bound `forward` put back there (accelerate's `remove_hook_from_module`) is no
    change."""
    forward = module.__dict__.get("forward")
    if forward is None:
        return False
    function = getattr(forward, "__func__", None) if getattr(forward, "__self__", None) is module else None
    return function is not type(module).forward


def _expect(expected: dict, container: dict, name: str, value: object) -> None:
    """Record that `container[name]` must stay `value` (once per container and name)."""
    expected[(id(container), name)] = (container, name, value)


def _submodule(layer: nn.Module, path: tuple[str, ...], expected: dict) -> nn.Module:
    """`layer.a.b` for path ("a", "b"), recording every step in `expected` (see `_expect`)."""
    module = layer
    for name in path:
        child = module._modules[name]
        _expect(expected, module._modules, name, child)
        module = child
    return module


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: torch.Tensor) -> torch.Tensor:
    """x / sqrt(mean(x²) + ε) (· weight) over the last dimension, as `nn.functional.rms_norm` computes it, in five
    operators (‖x‖² / d instead of the mean of squares; `eps` a tensor, see `FusedDecoder.eps_like`)."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    normed = x * torch.rsqrt(torch.addcmul(eps, norm, norm, value=1.0 / x.shape[-1]))
    return normed if weight is None else normed * weight


def fused_decoder_layers(
    decoder: FusedDecoder,
    hidden_states: torch.Tensor,
    positions: RetentionPositions,
    padding_mask: torch.Tensor | None,
    past_states: list[torch.Tensor | None],
    output_final_states: bool = True,
) -> tuple[torch.Tensor, list, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Every decoder layer and the final norm on `hidden_states` `[batch, length, hidden]`, as the modules compute
    them for a call from `past_states` (recurrent form for one token, parallel form for more).

    Returns the normed hidden states, each layer's final state (None unless `output_final_states`), and each layer's keys and values after rotation,
    scaling and padding (`[batch, heads, length, d]`, as `RetNetCache` records them).
    """
    batch, length, hidden = hidden_states.shape
    heads, head_dim, value_head_dim = decoder.num_heads, decoder.head_dim, decoder.value_head_dim
    eps = decoder.eps_like(hidden_states)
    keep = None if padding_mask is None else padding_mask[:, None, :, None].to(hidden_states.dtype)
    x = hidden_states.reshape(batch * length, hidden)  # the residual stream, one row per token
    activation = decoder.activation
    states, keys_and_values = [], []
    for layer, past_state in zip(decoder.layers, past_states):
        qk, v, gate = torch.mm(rms_norm(x, layer.retention_norm, eps), layer.qkvg_proj.t()).split(
            decoder.split_sizes, dim=-1
        )
        q, k = rotate_pairs(qk.view(batch, length, 2, heads, head_dim), positions.rotation).transpose(1, 3).unbind(2)
        v = v.view(batch, length, heads, value_head_dim).transpose(1, 2)  # [batch, heads, length, d_v]
        if keep is not None:
            k, v = k * keep, v * keep
        if length == 1:
            output, state = recurrent_retention(
                q, k, v, positions.log_decay, past_state, positions.decay, output_final_state=output_final_states
            )
        else:
            output, state = parallel_retention(
                q, k, v, positions.log_decay, past_state, positions.parallel_decay,
                output_final_state=output_final_states,
            )  # fmt: skip
        output = rms_norm(output, None, eps).transpose(1, 2).reshape(batch * length, -1)
        x = torch.addmm(x, nn.functional.silu(gate) * output, layer.o_proj.t())
        gate, up = torch.mm(rms_norm(x, layer.ffn_norm, eps), layer.gate_up_proj.t()).chunk(2, dim=-1)
        x = torch.addmm(x, activation(gate) * up, layer.down_proj.t())
        states.append(state)
        keys_and_values.append((k, v))
    return rms_norm(x, decoder.norm, eps).view(batch, length, hidden), states, keys_and_values
