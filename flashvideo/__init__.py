"""FlashVideo: RetNet-based swift text-to-video generation, native to the Hugging Face ecosystem.

Importing the package registers the model with the Auto classes:

```python
>>> import flashvideo
>>> from transformers import AutoModelForCausalLM
>>> model = AutoModelForCausalLM.from_pretrained("path/to/checkpoint")
```
"""

from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_flashvideo import FlashVideoConfig
from .frame_sampler import ImageCodesOnlyLogitsProcessor
from .modeling_flashvideo import FlashVideoForCausalLM, FlashVideoModel, FlashVideoPreTrainedModel, RetNetCache
from .pipeline_flashvideo import FlashVideoPipeline, FlashVideoPipelineOutput, GenerationStats
from .processing_flashvideo import FlashVideoProcessor
from .redundant_free import classify_tokens
from .video_io import export_to_gif, export_to_video


__version__ = "0.1.0"

AutoConfig.register(FlashVideoConfig.model_type, FlashVideoConfig, exist_ok=True)
AutoModel.register(FlashVideoConfig, FlashVideoModel, exist_ok=True)
AutoModelForCausalLM.register(FlashVideoConfig, FlashVideoForCausalLM, exist_ok=True)
# Saved checkpoints carry their modelling code and an `auto_map`, so that they also load with
# `trust_remote_code=True` where this package is not installed (e.g. straight from the Hub).
FlashVideoConfig.register_for_auto_class()
FlashVideoModel.register_for_auto_class("AutoModel")
FlashVideoForCausalLM.register_for_auto_class("AutoModelForCausalLM")
# `AutoProcessor.from_pretrained(checkpoint)` reads `processor_class` from processor_config.json.
AutoProcessor.register(FlashVideoConfig, FlashVideoProcessor, exist_ok=True)
# "text-to-video" is not a built-in task of transformers: register ours (saved pipelines record it in
# `custom_pipelines`, with their code, for use from the Hub).
PIPELINE_REGISTRY.register_pipeline(
    "text-to-video", pipeline_class=FlashVideoPipeline, pt_model=AutoModelForCausalLM, type="multimodal"
)

_DEFAULT_CHECKPOINT = Path(__file__).parent / "default_checkpoint"


def default_checkpoint() -> Path:
    """The checkpoint shipped inside the package (trained on Shapes), for offline use of the pipeline and the demo.

    Raises `FileNotFoundError` when this installation does not include it.
    """
    if not (_DEFAULT_CHECKPOINT / "config.json").is_file():
        raise FileNotFoundError(
            f"No default checkpoint in {_DEFAULT_CHECKPOINT}: this installation of flashvideo does not ship one. "
            "Pass a checkpoint directory explicitly, or train one (see docs/training.md)."
        )
    return _DEFAULT_CHECKPOINT


__all__ = [
    "default_checkpoint",
    "export_to_gif",
    "export_to_video",
    "FlashVideoConfig",
    "FlashVideoPipeline",
    "FlashVideoPipelineOutput",
    "FlashVideoProcessor",
    "GenerationStats",
    "ImageCodesOnlyLogitsProcessor",
    "classify_tokens",
    "FlashVideoForCausalLM",
    "FlashVideoModel",
    "FlashVideoPreTrainedModel",
    "RetNetCache",
]
