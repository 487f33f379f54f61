"""
One FlashVideo API across the transformers releases that `setup.cfg` admits (5.23 and 5.24).

transformers 5.24 renamed the cache argument of `forward()`/`generate()` and the cache field of the output
classes from `past_key_values` to `cache`; 5.23's output classes have no `cache` field and its `generate()`
hands the cache to the model as `past_key_values`. FlashVideo's own name is `cache` on every release, and
`past_key_values` keeps working too:

| | transformers 5.24 | transformers 5.23 |
|---|---|---|
| `model(..., cache=)` | the argument | the argument |
| `model(..., past_key_values=)` | accepted, `FutureWarning` (the model's `deprecate_kwarg`) | the same |
| `generate(..., cache=)` | transformers' argument | the same (renamed for transformers here) |
| `generate(..., past_key_values=)` | accepted by transformers with a warning | transformers' argument |
| `output.cache` | the field | a property reading the field |
| `output.past_key_values` | transformers' property (warns) | the field |

On 5.24 everything this module exports *is* transformers' own class; only on older releases does it add the
aliases. The modelling code imports the output classes and `GenerationMixin` from here and is written for
5.24.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, TypeVar

import transformers
from transformers.generation import GenerationMixin as _GenerationMixin
from transformers.modeling_outputs import BaseModelOutputWithPast as _BaseModelOutputWithPast
from transformers.modeling_outputs import CausalLMOutputWithPast as _CausalLMOutputWithPast
from transformers.utils import ModelOutput, logging


logger = logging.get_logger(__name__)

OutputClass = TypeVar("OutputClass", bound=type[ModelOutput])

OLD_CACHE_NAME = "past_key_values"
NEW_CACHE_NAME = "cache"


def _field_names(output_class: type[ModelOutput]) -> set[str]:
    return {field.name for field in dataclasses.fields(output_class)}


# The name transformers' generate() and output classes use for the cache on the installed release.
CACHE_NAME: str = (
    NEW_CACHE_NAME if NEW_CACHE_NAME in _field_names(_CausalLMOutputWithPast) else OLD_CACHE_NAME
)
HAS_CACHE_NAMING: bool = CACHE_NAME == NEW_CACHE_NAME


def _rename_cache_argument(kwargs: dict[str, Any], old: str, new: str) -> None:
    """Move `kwargs[old]` to `kwargs[new]` in place; both given (and not the same object) is an error."""
    if old not in kwargs:
        return
    value = kwargs.pop(old)
    if kwargs.get(new) is not None and value is not None and kwargs[new] is not value:
        raise ValueError(f"Pass the cache once: got both `{new}` and `{old}`; use `{NEW_CACHE_NAME}`.")
    if kwargs.get(new) is None:
        kwargs[new] = value


@functools.lru_cache(maxsize=None)
def with_cache_field(output_class: OutputClass) -> OutputClass:
    """
    `output_class` itself where it has a `cache` field (transformers 5.24); on older releases a subclass of it
    whose constructor also takes `cache=` and whose instances have a `cache` property, both standing for the
    class's `past_key_values` field. Instances stay instances of `output_class`.
    """
    names = _field_names(output_class)
    if NEW_CACHE_NAME in names or OLD_CACHE_NAME not in names:
        return output_class

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _rename_cache_argument(kwargs, NEW_CACHE_NAME, OLD_CACHE_NAME)
        output_class.__init__(self, *args, **kwargs)

    def cache(self) -> Any:
        """The model's cache (the `past_key_values` field before transformers 5.24)."""
        return self.past_key_values

    return type(
        output_class.__name__,
        (output_class,),
        {
            "__init__": functools.wraps(output_class.__init__)(__init__),
            "cache": property(cache),
            "__module__": __name__,
            "__qualname__": output_class.__name__,
            "__doc__": output_class.__doc__,
        },
    )


def add_cache_field(output: Any) -> Any:
    """A `ModelOutput` with a `past_key_values` field, as the same output of [`with_cache_field`]'s class."""
    if not isinstance(output, ModelOutput):
        return output
    output_class = with_cache_field(type(output))
    if output_class is type(output):
        return output
    return output_class(**{field.name: getattr(output, field.name) for field in dataclasses.fields(output)})


BaseModelOutputWithPast = with_cache_field(_BaseModelOutputWithPast)
CausalLMOutputWithPast = with_cache_field(_CausalLMOutputWithPast)


if HAS_CACHE_NAMING:
    GenerationMixin = _GenerationMixin
else:

    class GenerationMixin(_GenerationMixin):
        """
        transformers' `GenerationMixin` with the cache naming of transformers 5.24 on an older release:
        `generate()` takes `cache=` (or `past_key_values=`), hands the model its cache as `cache`, and returns
        outputs with a `cache` attribute.

        The model's own generation hooks are written for 5.24, so `model_kwargs` call the cache `cache` until
        the cache is prepared (`_prepare_cache_for_generation`, which the model may override to make its
        cache), and `past_key_values`, the name this release's generation loop reads and writes, from then on.
        """

        def generate(self, *args: Any, **kwargs: Any) -> Any:
            _rename_cache_argument(kwargs, OLD_CACHE_NAME, NEW_CACHE_NAME)
            return add_cache_field(super().generate(*args, **kwargs))

        def _prepare_cache_for_generation(
            self, generation_config: Any, model_kwargs: dict[str, Any], *args: Any, **kwargs: Any
        ) -> Any:
            _rename_cache_argument(model_kwargs, NEW_CACHE_NAME, OLD_CACHE_NAME)
            return super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)

        def prepare_inputs_for_generation(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
            _rename_cache_argument(kwargs, NEW_CACHE_NAME, OLD_CACHE_NAME)
            model_inputs = super().prepare_inputs_for_generation(*args, **kwargs)
            # The model's forward() calls its argument `cache`; `past_key_values` would be taken for a
            # caller's deprecated spelling and warned about on every decoding step.
            _rename_cache_argument(model_inputs, OLD_CACHE_NAME, NEW_CACHE_NAME)
            return model_inputs

    logger.info(
        f"transformers {transformers.__version__} names the cache `past_key_values`; FlashVideo also "
        "accepts `cache`."
    )


__all__ = [
    "BaseModelOutputWithPast",
    "CACHE_NAME",
    "CausalLMOutputWithPast",
    "GenerationMixin",
    "HAS_CACHE_NAMING",
    "add_cache_field",
    "with_cache_field",
]
