"""The decode step compiled ahead of time: `torch.export` and AOTInductor, one program per call shape.

`torch.compile` makes a decode step one call into generated code, but every call still passes through dynamo (its
guards on ~40 tensors and ~500 attributes) and two layers of Python wrappers; at the shipped model's size that is
as long as the generated code itself takes (py-spy, the compiled `decode` of the shipped key-frame model: 44% of
the time in the kernels, 24% in dynamo's lookup and wrappers). Here each call shape is exported once and compiled
by AOTInductor into a shared library that is then called directly, with a list of tensors.

What a program computes is `FlashVideoModel._embed_and_run_layers`, on the fused path (`fused_layers.py`) or
through the modules (half-precision weights): the embeddings, code positions and every layer, returning the hidden
states, final states, keys and values, log γ and places. The model's parameters and buffers are inputs of the
program, passed on every call, not constants compiled into it: whatever changes them (in place, through `.data`,
a parameter or module reassigned) is what the next call computes with. (AOTInductor's own constants, swapped for
the model's tensors with `load_constants(user_managed=True)`, were measured to keep computing with the old values
after an in-place update on torch 2.13, and cost no less: 245 µs a step either way.)

Calls a program cannot serve (embeddings passed in, a padding mask, hidden states asked for, gradients enabled, no
cache states) run the eager function instead.

Example:

```python
>>> model.model.compile_recurrent_step()  # ahead of time by default; see FlashVideoModel.compile_recurrent_step
>>> with torch.inference_mode():
...     logits = model.decode(next_ids, cache)  # the first call of a shape compiles its program (tens of seconds)
```
"""

from __future__ import annotations

import copy
import io
import operator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.utils.stateless import _reparametrize_module
from transformers.utils import logging

from .fused_layers import FusedDecoder, _expect


if TYPE_CHECKING:
    from .modeling_flashvideo import FlashVideoModel


logger = logging.get_logger(__name__)


class _StepProgram(nn.Module):
    """What is exported: `_embed_and_run_layers` on a flat list of tensors (the call's, then the model's weights),
    returning a flat tuple `(hidden, *states, *keys, *values, log_decay[, places])`."""

    def __init__(
        self, model: FlashVideoModel, weight_names: list[str], forward_mode: str, with_past_places: bool, fused: bool
    ):
        super().__init__()
        # Not a submodule: export would make its weights constants of the program. They come in as inputs.
        self.__dict__["model"] = model
        self.weight_names = weight_names
        self.forward_mode, self.with_past_places, self.fused = forward_mode, with_past_places, fused

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        count = len(self.weight_names)
        (input_ids, *call_tensors), weights = tensors[:-count], tensors[-count:]
        past_places, positions, *states = call_tensors if self.with_past_places else (None, *call_tensors)
        model = self.model
        kept = model._fused_decoder
        # What `torch.func.functional_call` does around `forward`, here around the function that is compiled.
        with _reparametrize_module(model, dict(zip(self.weight_names, weights))):
            # The fused decoder holds parameter objects: read again from the modules, now holding the inputs.
            if self.fused:
                model._fused_decoder = FusedDecoder(model)
            try:
                hidden, states, keys_and_values, log_decay, _, places = model._embed_and_run_layers(
                    input_ids, None, past_places, positions, None, states, self.forward_mode, False, True, self.fused
                )
            finally:
                model._fused_decoder = kept
        keys, values = zip(*keys_and_values)
        return (hidden, *states, *keys, *values, log_decay, *(() if places is None else (places,)))


class _ModelWeights:
    """The model's parameters and buffers in a fixed order, the programs' last inputs, found again only when a module
    or tensor along their paths or the storage under one was replaced (a check of about 8 µs for the shipped
    model)."""

    def __init__(self, model: FlashVideoModel):
        self.model = model
        self.names: list[str] = []
        self.tensors: list[torch.Tensor] = []
        self.signature = -1  # a number for the names, shapes, dtypes and devices of the tensors (`_layouts`)
        self._layouts: dict[tuple, int] = {}
        self._pointers: list[int] = []
        self._contiguous = True
        # Every step of the paths to the tensors (as `FusedDecoder` records its own, `fused_layers._expect`), as three
        # lists: a module's `_modules`, `_parameters` or `_buffers` dict, a name, the object expected under it. Found
        # on first use (a model being copied is not whole).
        self._expected: tuple[list[dict], list[str], list[object]] = ([], [], [])

    def current(self) -> list[torch.Tensor]:
        """The tensors to pass, looked for again when a module or tensor was replaced, or the storage under one
        (`.data` replaced, `model.to(...)`: new shapes, dtypes or devices may need a program of their own)."""
        # `map` keeps the loops in C: about a third of the time of generator expressions.
        containers, names, values = self._expected
        if (
            not values
            or not all(map(operator.is_, map(dict.get, containers, names), values))
            or list(map(torch.Tensor.data_ptr, self.tensors)) != self._pointers
        ):
            self._find()
        if self._contiguous:
            return self.tensors
        # A program reads its inputs with the strides it was compiled for.
        return [tensor if tensor.is_contiguous() else tensor.contiguous() for tensor in self.tensors]

    def _find(self) -> None:
        try:
            tensors, expected = self._walk(self.names) if self.names else (None, None)
        except KeyError:  # a module replaced by one of another structure (an adapter): its tensors have new names
            tensors = None
        if tensors is None:
            self.names = [name for name, _ in self.model.named_parameters()]
            self.names += [name for name, _ in self.model.named_buffers()]
            tensors, expected = self._walk(self.names)
        self.tensors, self._expected = tensors, tuple(map(list, zip(*expected.values())))
        self._pointers = [tensor.data_ptr() for tensor in tensors]
        self._contiguous = all(tensor.is_contiguous() for tensor in tensors)
        # Programs are compiled for these names, shapes, dtypes and devices: a small number for them, cheap to look up.
        layout = (tuple(self.names), tuple((tuple(tensor.shape), tensor.dtype, tensor.device) for tensor in tensors))
        self.signature = self._layouts.setdefault(layout, len(self._layouts))

    def _walk(self, names: list[str]) -> tuple[list[torch.Tensor], dict]:
        tensors, expected = [], {}
        for name in names:
            *path, attribute = name.split(".")
            module = self.model
            for step in path:
                child = module._modules[step]
                _expect(expected, module._modules, step, child)
                module = child
            container = module._parameters if attribute in module._parameters else module._buffers
            tensors.append(container[attribute])
            _expect(expected, container, attribute, container[attribute])
        return tensors, expected


class AheadOfTimeStep:
    """`model._embed_and_run_layers` for decoding, as AOTInductor programs compiled on first use per call shape
    (batch size, call length, position layout, dtypes, device, thread count, weight shapes).

    Example:

    ```python
    >>> step = AheadOfTimeStep(model.model)
    >>> hidden, states, keys_and_values, log_decay, _, places = step(ids, None, places, positions, None, states,
    ...                                                               "recurrent", False, True, True)
    ```
    """

    def __init__(self, model: FlashVideoModel, inductor_configs: dict[str, Any] | None = None):
        self.model = model
        self.inductor_configs = dict(inductor_configs or {})
        self.programs: dict[tuple, Any] = {}  # call shape -> the loaded program (`aoti_load_package`)
        self.weights = _ModelWeights(model)

    def __deepcopy__(self, memo: dict) -> AheadOfTimeStep:
        # The loaded library cannot be copied: a copied model compiles its own programs on first use.
        return type(self)(copy.deepcopy(self.model, memo), self.inductor_configs)

    def __call__(
        self,
        input_ids: torch.Tensor | None,
        inputs_embeds: torch.Tensor | None,
        past_places: torch.Tensor | None,
        positions: torch.Tensor,
        padding_mask: torch.Tensor | None,
        past_states: list[torch.Tensor | None],
        forward_mode: str,
        output_hidden_states: bool,
        output_final_states: bool = True,
        fused: bool = False,
    ) -> tuple:
        """The arguments and results of `FlashVideoModel._embed_and_run_layers`."""
        model = self.model
        if (
            input_ids is None
            or inputs_embeds is not None
            or padding_mask is not None
            or output_hidden_states
            or not output_final_states
            or torch.is_grad_enabled()
            or any(state is None for state in past_states)
        ):
            return model._embed_and_run_layers(
                input_ids, inputs_embeds, past_places, positions, padding_mask, past_states, forward_mode,
                output_hidden_states, output_final_states, fused,
            )  # fmt: skip
        weights = self.weights.current()
        # A program reads its inputs with the strides it was compiled for: contiguous (a no-op where they are).
        inputs = [input_ids.contiguous(), positions.contiguous(), *(state.contiguous() for state in past_states)]
        if past_places is not None:
            inputs.insert(1, past_places.contiguous())
        state = inputs[-1]
        key = (
            forward_mode, fused, input_ids.shape, input_ids.dtype, past_places is None, positions.shape, state.shape,
            state.dtype, input_ids.device, self.weights.signature, torch.get_num_threads(),
        )  # fmt: skip
        program = self.programs.get(key)
        if program is None:
            program = self.programs[key] = self._compile(inputs + weights, forward_mode, past_places is not None, fused)
        outputs = program.loader.boxed_run(inputs + weights)
        layers = len(past_states)
        hidden, log_decay = outputs[0], outputs[1 + 3 * layers]
        states = outputs[1 : 1 + layers]
        keys_and_values = list(zip(outputs[1 + layers : 1 + 2 * layers], outputs[1 + 2 * layers : 1 + 3 * layers]))
        places = outputs[2 + 3 * layers] if len(outputs) > 2 + 3 * layers else None
        return hidden, states, keys_and_values, log_decay, None, places

    def _compile(self, inputs: list[torch.Tensor], forward_mode: str, with_past_places: bool, fused: bool) -> Any:
        logger.info(
            "Compiling the %s step ahead of time for input_ids of shape %s (AOTInductor)",
            forward_mode, tuple(inputs[0].shape),
        )  # fmt: skip
        program = _StepProgram(self.model, self.weights.names, forward_mode, with_past_places, fused)
        # Exported outside inference mode (export cannot trace inference tensors), on copies of the inputs.
        with torch.inference_mode(False), torch.no_grad():
            examples = tuple(tensor.clone() for tensor in inputs)
            exported = torch.export.export(program, examples, strict=False)
            package = io.BytesIO()
            torch._inductor.aoti_compile_and_package(
                exported, package_path=package, inductor_configs=self.inductor_configs
            )
            return torch._inductor.aoti_load_package(package)
