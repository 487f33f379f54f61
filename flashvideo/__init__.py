"""FlashVideo: RetNet-based swift text-to-video generation, native to the Hugging Face ecosystem.

Importing the package registers the model with the Auto classes:

```python
>>> import flashvideo
>>> from transformers import AutoModelForCausalLM
>>> model = AutoModelForCausalLM.from_pretrained("path/to/checkpoint")
```
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_flashvideo import FlashVideoConfig
from .modeling_flashvideo import FlashVideoForCausalLM, FlashVideoModel, FlashVideoPreTrainedModel, RetNetCache


__version__ = "0.1.0"

AutoConfig.register(FlashVideoConfig.model_type, FlashVideoConfig, exist_ok=True)
AutoModel.register(FlashVideoConfig, FlashVideoModel, exist_ok=True)
AutoModelForCausalLM.register(FlashVideoConfig, FlashVideoForCausalLM, exist_ok=True)
# Saved checkpoints carry their modelling code and an `auto_map`, so that they also load with
# `trust_remote_code=True` where this package is not installed (e.g. straight from the Hub).
FlashVideoConfig.register_for_auto_class()
FlashVideoModel.register_for_auto_class("AutoModel")
FlashVideoForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "FlashVideoConfig",
    "FlashVideoForCausalLM",
    "FlashVideoModel",
    "FlashVideoPreTrainedModel",
    "RetNetCache",
]
