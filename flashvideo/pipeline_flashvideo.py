"""`pipeline("text-to-video")`: key frames, then (redundant-free) interpolation between them (FlashVideo §3).

1. Key frames: for key frame i, feed `[text][SN_i]` in one call, then sample its codes recurrently (logits limited
   to image codes). A given `first_frame` is fed, not sampled.
2. Interpolation: every adjacent key-frame pair (A, B) becomes one sample of a batch:
   `[text][SN_1][A][text][SN_{n+2}][B]` is fed, then `[text][SN_j]` + sampled F_j for j = 2 … n+1, and the frames
   are reordered by serial number to A, F_2 … F_{n+1}, B.
3. Redundant-free interpolation: positions where A and B agree, far from any change, are partly inherited from A
   (fed, not sampled); see `redundant_free.py`.

Frames stay code grids from `preprocess` to `postprocess`; they become model ids only where the model is fed. Why a
transformers `Pipeline` and how a call is routed: docs/pipeline.md.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from diffusers import VQModel
from transformers import AutoModelForCausalLM, Pipeline
from transformers.utils import logging

from .draft_table import CodeDraftTable
from .frame_sampler import CODE_TABLE, ROW_ABOVE, FrameSampler, TokenCounts, add_drafts, build_logits_processor
from .hub import push_pipeline
from .image_tokenizer import (
    IMAGE_TOKENIZER_SUBFOLDER,
    check_image_tokenizer,
    codes_to_frames,
    frames_to_codes,
    load_image_tokenizer,
)
from .modeling_flashvideo import FlashVideoForCausalLM
from .processing_flashvideo import FlashVideoProcessor
from .redundant_free import classify_tokens
from .validation import check_bool, check_choice, check_int, check_number, is_int


logger = logging.get_logger(__name__)

INTERPOLATION_SUBFOLDER = "interpolation"
# `interpolation_model=KEY_FRAME_MODEL`: the key-frame model also interpolates (asked for, never assumed).
KEY_FRAME_MODEL = "key_frame_model"
OUTPUT_TYPES = ("np", "pil", "latent")  # "latent": the image codes, not decoded (as diffusers' pipelines name it)
# Where drafts come from: "previous_frame" drafts key frame j from key frame j - 1 and an inserted frame from the
# frame before it in time (A for the first), the first key frame from its own row above; "row_above" always from
# the row above inside the frame being sampled; "code_table" looks each cell up in the pipeline's draft table (the
# commonest code given the codes above and left of it and the cell in the previous frame, `draft_table.py`), falling
# back to "previous_frame" where the table has not seen them. The default (None) is "code_table" where the pipeline
# has a draft table, else "previous_frame".
DRAFT_SOURCES = (CODE_TABLE, "previous_frame", "row_above")
# Drafts per verify call, per stage, chosen by measurement on the shipped checkpoint with its draft table (1 thread,
# 16-frame clips, 10 prompts x seeds, every setting in one process): key frames (one row per prompt, where a longer
# call costs little more) 4 / 6 / 8 / 12 drafts: 0.353 / 0.326 / 0.314 / 0.334 s for the stage; interpolation (three
# pairs per prompt in one batch, where a call's compute dominates) 3 / 4 / 5 / 6 drafts: 0.604 / 0.614 / 0.626 /
# 0.634 s. Before the draft table, one count for both: 4 (2.39 s a clip against 2.76 / 2.42 / 2.60 / 2.92 for
# 2 / 6 / 8 / 16). With look-ahead drafts, measured again idle (24 prompts, interleaved): 12 / 8 drafts make 14% fewer
# calls but take 0.995 of the time, so these stay (docs/speculative_decoding.md).
KEY_FRAME_DRAFT_TOKENS = 8
INTERPOLATION_DRAFT_TOKENS = 4
# Look-ahead drafts (`FrameSampler.look_ahead_start`) per stage: from which position after a drawn token a refused
# call's own argmax drafts, instead of the draft table. Measured on the shipped checkpoint (12 prompts x seeds, the
# mean probability the model gives each draft, i.e. its acceptance, at the positions after a refusal): key frames,
# right after the drawn token, table 0.51 against look-ahead 0.39, after it look-ahead 0.74-0.96 against 0.63-0.89;
# interpolation, look-ahead better everywhere (0.41 against 0.35 right after the drawn token).
KEY_FRAME_LOOK_AHEAD_START = 1
INTERPOLATION_LOOK_AHEAD_START = 0


@dataclass
class StageStats:
    """What one stage did: image tokens sampled by the model vs fed from elsewhere (inherited), the model calls
    it made in sequence (a batched call counts once), and its time."""

    frames: int = 0
    tokens_sampled: int = 0
    tokens_inherited: int = 0
    model_calls: int = 0
    seconds: float = 0.0
    tokens_drafted: int = 0
    tokens_accepted: int = 0
    drafts_by_source: dict[str, list[int]] = field(default_factory=dict)  # source -> [drafted, accepted]

    def add(self, counts: TokenCounts, seconds: float) -> None:
        """Add what a `FrameSampler` counted."""
        self.tokens_sampled += counts.sampled
        self.tokens_inherited += counts.inherited
        self.tokens_drafted += counts.drafted
        self.tokens_accepted += counts.accepted
        self.model_calls += counts.model_calls
        self.seconds += seconds
        for source, (drafted, accepted) in counts.drafts_by_source.items():
            add_drafts(self.drafts_by_source, source, drafted, accepted)

    def to_dict(self) -> dict:
        """The counts as plain JSON values (seconds rounded to 0.1 ms)."""
        return {
            "frames": self.frames, "tokens_sampled": self.tokens_sampled, "tokens_inherited": self.tokens_inherited,
            "model_calls": self.model_calls, "seconds": round(self.seconds, 4), "tokens_drafted": self.tokens_drafted,
            "tokens_accepted": self.tokens_accepted,
            "drafts_by_source": {source: list(tally) for source, tally in self.drafts_by_source.items()},
        }  # fmt: skip


@dataclass
class GenerationStats:
    """What a pipeline call did, per stage; the one formatting of it is here (`summary()`, `to_dict()`), which the
    CLI, the Space and the benchmarks show.

    Example:
        >>> stats = pipe("a red circle moving right").stats  # doctest: +SKIP
        >>> print(stats.summary())  # doctest: +SKIP
        key frames: 4 frames, 1024 tokens sampled, 300 calls, drafts 700/900 accepted, 0.91 s; interpolation: ...
    """

    key_frames: StageStats = field(default_factory=StageStats)
    interpolation: StageStats = field(default_factory=StageStats)
    decode: StageStats = field(default_factory=StageStats)

    @property
    def seconds(self) -> float:
        return self.key_frames.seconds + self.interpolation.seconds + self.decode.seconds

    @property
    def frames_per_second(self) -> float:
        frames = self.key_frames.frames + self.interpolation.frames
        return frames / self.seconds if self.seconds else float("nan")

    @property
    def tokens_sampled(self) -> int:
        return self.key_frames.tokens_sampled + self.interpolation.tokens_sampled

    @property
    def tokens_inherited(self) -> int:
        return self.key_frames.tokens_inherited + self.interpolation.tokens_inherited

    def to_dict(self) -> dict:
        """Each stage's `StageStats.to_dict()`, then the totals (JSON values, e.g. for the Space and `bench video`)."""
        tokens = self.tokens_sampled + self.tokens_inherited
        return {
            "key_frames": self.key_frames.to_dict(), "interpolation": self.interpolation.to_dict(),
            "decode": self.decode.to_dict(), "total_seconds": round(self.seconds, 4),
            "frames_per_second": round(self.frames_per_second, 2), "tokens_sampled": self.tokens_sampled,
            "tokens_inherited": self.tokens_inherited,
            "inherited_share": round(self.tokens_inherited / tokens, 4) if tokens else 0.0,
        }  # fmt: skip

    def summary(self) -> str:
        """One line: frames, tokens, model calls, drafts accepted and seconds per stage, then frames per second."""

        def drafts(stage: StageStats) -> str:
            return f", drafts {stage.tokens_accepted}/{stage.tokens_drafted} accepted" if stage.tokens_drafted else ""

        key, interpolation = self.key_frames, self.interpolation
        return (
            f"key frames: {key.frames} frames, {key.tokens_sampled} tokens sampled, {key.model_calls} calls"
            f"{drafts(key)}, {key.seconds:.2f} s; interpolation: {interpolation.frames} frames, "
            f"{interpolation.tokens_sampled} sampled / {interpolation.tokens_inherited} inherited, "
            f"{interpolation.model_calls} calls{drafts(interpolation)}, {interpolation.seconds:.2f} s; "
            f"decode {self.decode.seconds:.2f} s; {self.frames_per_second:.1f} frames/s"
        )

    __str__ = summary


@dataclass
class FlashVideoPipelineOutput:
    """What `FlashVideoPipeline` returns for one prompt (a list of prompts gives a list of these).

    Attributes:
        frames: uint8 array `[1, frames, H, W, 3]` (`output_type="np"`), a list holding the clip's PIL images
            (`"pil"`), or the clip's image codes, int64 `[1, frames, grid, grid]` (`"latent"`: the VQ model is not
            run; `pipe.vqvae` decodes them, see `image_tokenizer.codes_to_frames`).
        stats: tokens sampled vs inherited, model calls and seconds per stage, and overall frames per second, of the
            batch the clip was made in (shared by the outputs of one batch).
    """

    frames: np.ndarray | list
    stats: GenerationStats


class FrameProgress:
    """The one progress channel of a pipeline call: every finished frame of the clip (all prompts of the batch at one
    time index) advances the call's progress bar (`transformers.utils.logging.tqdm`, so
    `transformers.utils.logging.disable_progress_bar()` silences it too) and reaches the user's `callback`, decoded.

    Example:

    ```python
    >>> progress = FrameProgress(total=16, decode=lambda codes: codes, callback=print, enabled=False)
    >>> progress.frame_done("key_frames", 0, codes)   # prints: key_frames 0 <codes>
    ```
    """

    def __init__(
        self, total: int, decode: Callable[[torch.Tensor], np.ndarray],
        callback: Callable[[str, int, np.ndarray], None] | None = None, enabled: bool = True,
    ) -> None:  # fmt: skip
        self.decode, self.callback = decode, callback
        self.bar = logging.tqdm(total=total, desc="frames", disable=not enabled)

    def frame_done(self, stage: str, time_index: int, codes: torch.Tensor) -> None:
        """`codes` `[batch, grid, grid]`: the frame at `time_index` of every clip of the batch."""
        self.bar.update(1)
        if self.callback is not None:
            self.callback(stage, time_index, self.decode(codes))

    def close(self) -> None:
        self.bar.close()


class _BuiltByFromPretrainedInFactory(type(Pipeline)):
    """transformers' `pipeline("text-to-video", model=...)` loads the key-frame model and then builds the pipeline as
    `cls(model=model, task=..., device=...)`: it cannot load the components it does not know (the processor, the VQ
    model, the interpolation model). Such a call (a model loaded from a checkpoint, no processor, no vqvae) is
    answered by `from_pretrained` with that model, so that loading stays in `from_pretrained` and `__init__` never
    reads a file."""

    def __call__(cls, *args, **kwargs):
        model = args[0] if args else kwargs.get("model")
        source = getattr(model, "name_or_path", None)
        if len(args) <= 1 and source and kwargs.get("processor") is None and kwargs.get("vqvae") is None:
            kwargs.pop("model", None)
            return cls.from_pretrained(source, model=model, **kwargs)
        return super().__call__(*args, **kwargs)


class FlashVideoPipeline(Pipeline, metaclass=_BuiltByFromPretrainedInFactory):
    """Text-to-video with FlashVideo: key frames, then (redundant-free) interpolation.

    A transformers `Pipeline` as designed (docs/pipeline.md says why not diffusers' `DiffusionPipeline`): arguments
    are checked and routed by `_sanitize_parameters`, then `preprocess` (tokenize the prompt once, encode a given
    first frame to codes) → `_forward` (key frames and interpolation, in codes; ids only at the model) →
    `postprocess` (codes to frames through the VQ model). A list of prompts gives a list of outputs; `batch_size=n` generates n prompts
    in one batch.

    Components: the key-frame model (`model`), the interpolation model (`interpolation_model`, same class, its own
    weights), the processor (`processor`: caption tokenizer and sequence layout, no weights; it is also the pipeline's
    `tokenizer`, which pads batches of prompts) and the image tokenizer (`vqvae`: a `diffusers.VQModel`, or any
    object with `encode_frames` / `decode_frames`, e.g. the icetk adapter). A checkpoint directory holds the key-frame
    model at the top level, the interpolation model under `interpolation/`, the VQ model under `image_tokenizer/`
    and the processor files; `from_pretrained` (and so `pipeline()`) loads them, `__init__` only assembles them.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> import flashvideo
    >>> pipe = pipeline("text-to-video", model="path/to/checkpoint")    # or FlashVideoPipeline.from_pretrained(...)
    >>> out = pipe("a red circle moving right", num_frames=16, key_frame_spacing=5, redundant_free=True)
    >>> out.frames.shape, out.stats.frames_per_second
    ((1, 16, 64, 64, 3), ...)
    >>> flashvideo.export_to_video(out.frames[0], "clip.mp4")
    >>> outs = pipe(["a red circle moving right", "a blue square moving up"], batch_size=2)   # one batch, two outputs
    ```
    """

    _load_tokenizer = False
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __init__(
        self,
        model: FlashVideoForCausalLM,
        processor: FlashVideoProcessor | None = None,
        vqvae: VQModel | None = None,
        interpolation_model: FlashVideoForCausalLM | str | None = None,
        show_progress: bool = True,
        draft_table: CodeDraftTable | None = None,
        **kwargs,
    ):
        if processor is None or vqvae is None:
            raise ValueError(
                "processor and vqvae (the image tokenizer) are required for a model that was not loaded from a "
                "checkpoint; load one with FlashVideoPipeline.from_pretrained(path) or "
                "pipeline('text-to-video', model=path)."
            )
        if isinstance(interpolation_model, str) and interpolation_model != KEY_FRAME_MODEL:
            raise ValueError(
                f"interpolation_model must be a FlashVideoForCausalLM, {KEY_FRAME_MODEL!r} (the key-frame model also "
                f"interpolates) or None (the key-frame model, for models built in memory), got {interpolation_model!r}."
            )
        if interpolation_model is None:
            logger.info("No interpolation model given: the key-frame model also interpolates.")
        if interpolation_model is None or isinstance(interpolation_model, str):
            interpolation_model = model
        processor.layout.check_matches(model.config, "the key-frame model's config")
        processor.layout.check_matches(interpolation_model.config, "the interpolation model's config")
        check_image_tokenizer(vqvae, processor.layout)
        codebook_size = getattr(getattr(vqvae, "config", None), "num_vq_embeddings", None)
        if codebook_size is not None and codebook_size != model.config.image_vocab_size:
            raise ValueError(
                f"The image tokenizer (vqvae) has {codebook_size} codes but the model samples from "
                f"image_vocab_size={model.config.image_vocab_size}; they must match."
            )
        if draft_table is not None and draft_table.vocab_size != model.config.image_vocab_size:
            raise ValueError(
                f"draft_table was fitted for {draft_table.vocab_size} image codes, but the model samples from "
                f"image_vocab_size={model.config.image_vocab_size}; fit one for this image tokenizer."
            )
        self.draft_table = draft_table
        self.interpolation_model = interpolation_model  # `_sanitize_parameters` reads its config from __init__ on
        self.show_progress = show_progress
        self.compiled_draft_counts: frozenset[int] = frozenset()  # set by `compile_recurrent_step`
        # After a refused draft, draft the positions the verify call judged beyond it with the call's own argmax
        # there (`FrameSampler.look_ahead_start`, per stage); False drafts them from `draft_source` alone (exact either way).
        self.look_ahead_drafts = True
        # The processor is the pipeline's tokenizer: it turns prompts into model ids, and transformers pads batches
        # of prompts (`batch_size=`) with its `pad_token_id`, the layout's.
        super().__init__(model=model, tokenizer=processor, processor=processor, **kwargs)
        self.vqvae = vqvae.to(self.device)
        if isinstance(self.vqvae, torch.nn.Module):
            self.vqvae.eval()
        self.interpolation_model = interpolation_model.to(self.device).eval()
        self.model.eval()

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, device: str | torch.device | None = None,
        interpolation_model: FlashVideoForCausalLM | str | None = None, model: FlashVideoForCausalLM | None = None,
        draft_table: CodeDraftTable | None = None, **kwargs,
    ) -> "FlashVideoPipeline":  # fmt: skip
        """Load the models, the VQ model and the processor from a checkpoint directory or a Hub repo id (offline
        from the cache), and build the pipeline.

        The interpolation model comes from the checkpoint's `interpolation/` unless `interpolation_model` is given
        (`KEY_FRAME_MODEL`: the key-frame model interpolates); a checkpoint without one is refused, naming the file.
        `model`: a key-frame model already loaded from this checkpoint (what `pipeline()` passes). The draft table
        for speculative decoding comes from the checkpoint's `draft_table.safetensors` when it has one (none: drafts
        from the previous frame) unless `draft_table` is given. Keyword arguments
        of the pipeline (`task`, `dtype`, `show_progress`, `batch_size`, call defaults such as `num_frames`) go to
        it; the rest (`revision`, `cache_dir`, `token`, …) to `huggingface_hub.snapshot_download`.

        Example:

        ```python
        >>> pipe = FlashVideoPipeline.from_pretrained(flashvideo.default_checkpoint(), device="cpu")
        ```
        """
        # The pipeline's own keywords and call defaults (`pipeline(..., num_frames=6)`) go to `__init__`.
        pipeline_kwargs = {key: kwargs.pop(key) for key in (*PIPELINE_INIT_KEYS, *CALL_DEFAULTS) if key in kwargs}
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(pretrained_model_name_or_path), **kwargs))
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(path)
        if interpolation_model is None:
            interpolation_model = load_interpolation_model(path)
        elif interpolation_model == KEY_FRAME_MODEL:
            interpolation_model = model
        processor = FlashVideoProcessor.from_pretrained(path)
        vqvae = load_image_tokenizer(path)
        if draft_table is None:
            draft_table = CodeDraftTable.from_pretrained(path, vocab_size=model.config.image_vocab_size)
        return cls(
            model=model, processor=processor, vqvae=vqvae, interpolation_model=interpolation_model,
            device=device if device is not None else model.device, draft_table=draft_table, **pipeline_kwargs,
        )  # fmt: skip

    def compile_recurrent_step(
        self, num_draft_tokens: int | None = None, **compile_kwargs
    ) -> "FlashVideoPipeline":
        """Compile the decode step of the key-frame and interpolation models (ahead of time with AOTInductor, or
        with `torch.compile` given `ahead_of_time=False`): the one-token step and speculative decoding's verify
        calls for `num_draft_tokens` drafts (None: each stage's default), which calls with that many drafts then
        pad to one length (a token and the drafts), so that every verify call of a stage has one shape.

        Sampled tokens are where the time goes; see `FlashVideoModel.compile_recurrent_step`, which
        `compile_kwargs` go to. The first clip pays the compilation (once per batch size, length and model).
        Returns the pipeline.
        """
        counts = {self._draft_count(num_draft_tokens, stage) for stage in ("key_frames", "interpolation")}
        for model in {id(model): model for model in (self.model, self.interpolation_model)}.values():
            model.compile_recurrent_step(call_lengths=tuple(sorted(1 + count for count in counts)), **compile_kwargs)
        self.compiled_draft_counts = frozenset(counts)
        return self

    def save_pretrained(self, save_directory: str | Path, hub_ready: bool = False, **kwargs) -> None:
        """Write the key-frame model, the interpolation model (`interpolation/`, the key-frame model again when it
        also interpolates), the VQ model (`image_tokenizer/`) and the processor.

        With `hub_ready=True` the saved config also gets `custom_pipelines` and the directory the pipeline's code, so
        that `pipeline(model=repo, trust_remote_code=True)` works where flashvideo is not installed; the live
        pipeline is left as it was. transformers then always asks for `trust_remote_code`, so plain local
        checkpoints leave it out: with flashvideo imported, `pipeline("text-to-video", model=directory)` loads them as
        they are.
        """
        # `Pipeline.save_pretrained` records the task on the live config (`custom_pipelines`), and every
        # `PreTrainedModel.save_pretrained` its `architectures`, `dtype` and `auto_map`: what is saved gets them, the
        # live models' configs are put back as they were.
        configs = {id(model.config): model.config for model in (self.model, self.interpolation_model)}.values()
        before = [(config, dict(vars(config))) for config in configs]
        try:
            if hub_ready:
                super().save_pretrained(save_directory, **kwargs)  # the model, the code and the tokenizer (processor)
            else:
                self.model.save_pretrained(save_directory, **kwargs)
                self.processor.save_pretrained(save_directory)
            # Always written (the key-frame model again when it also interpolates), so that loading never guesses.
            self.interpolation_model.save_pretrained(Path(save_directory) / INTERPOLATION_SUBFOLDER, **kwargs)
            self.vqvae.save_pretrained(Path(save_directory) / IMAGE_TOKENIZER_SUBFOLDER, safe_serialization=True)
            if self.draft_table is not None:
                self.draft_table.save_pretrained(save_directory)
        finally:
            for config, attributes in before:
                vars(config).clear()
                vars(config).update(attributes)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: bool | str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        tags: list[str] | None = None,
        eval_results_path: str | Path | None = None,
        **kwargs,
    ):
        """Upload the pipeline as a Hub-ready repo, like `flashvideo push` (see `flashvideo.hub.push_pipeline`).

        `Pipeline.push_to_hub` would save without `custom_pipelines` and the pipeline's code and write a generic model
        card; this writes the Hub-ready layout (`save_pretrained(..., hub_ready=True)`), the interpolation model, the
        VQ model, the processor, and a FlashVideo model card (with `eval_results` from `flashvideo eval`'s JSON when
        given). Returns the `CommitInfo` (a `str`: the commit URL).
        """
        if kwargs:
            logger.info(f"push_to_hub ignores {sorted(kwargs)}.")
        return push_pipeline(
            self, repo_id, private=private, token=token, eval_results_path=eval_results_path, tags=tags,
            commit_message=commit_message, commit_description=commit_description, revision=revision,
            create_pr=create_pr,
        )  # fmt: skip

    # ------------------------------------------------------------------ the Pipeline protocol

    def _sanitize_parameters(self, **arguments) -> tuple[dict, dict, dict]:
        r"""Check every argument of a call, before any work, and route it: `first_frame` to `preprocess`,
        `output_type` to `postprocess`, the rest to `_forward`. transformers calls this from `__init__` (defaults given
        there apply to every call) and from `__call__`.

        `pipe(prompt, **arguments)`: `prompt` is a prompt, a dict `{"prompt": ..., "first_frame": ...}`, or a list of
        either (a list of outputs; `batch_size=n` puts n prompts in one batch). The arguments:

        Args:
            num_frames: frames per clip. With interpolation, `num_frames - 1` must be a multiple of
                `key_frame_spacing`; at most `(max_frames - 1) * key_frame_spacing + 1` (key frames are numbered by the
                model's serial-number tokens), or `max_frames` without interpolation.
            key_frame_spacing: frames from one key frame to the next; `key_frame_spacing - 1` frames are inserted
                between each adjacent pair. 1 means no interpolation.
            interpolate: False generates every frame as a key frame (fully autoregressive).
            redundant_free: inherit a share of the stable tokens from key frame A instead of sampling them (§3.3).
                On by default, as in the paper; False gives plain interpolation (every inserted token sampled).
            inherit_ratio: share of the stable tokens inherited, in [0, 1] (paper: 0.2 at 60 fps, 1 key frame/s).
            unstable_radius: code-grid radius around changed tokens that is always sampled, >= 0.
            temperature, top_k, top_p, do_sample: sampling, as in `generate()`; `do_sample=False` is greedy. Each one
                left at None comes, per stage, from that stage's model's `generation_config` (so a checkpoint's
                `generation_config.json` sets its defaults), else temperature 1, no top-k / top-p, and sampling on.
            guidance_scale: classifier-free guidance for the key frames, >= 1 (1: off). Above 1, each key-frame token
                is sampled from `log p(x | uncond) + guidance_scale * (log p(x | prompt) - log p(x | uncond))`, where
                the unconditional stream sees `negative_prompt` (or no text) before each serial number; it doubles
                the key-frame model's calls. None: the key-frame model's `generation_config.guidance_scale`, else 1.
            negative_prompt: the text of the unconditional stream (None or "": no text, as in training with
                `--proportion_empty_prompts`). Used only when guidance is on.
            generator: a `torch.Generator` for reproducible sampling (else the global RNG, like `generate()`).
            first_frame: uint8 `[H, W, 3]` frame to condition every prompt on: fed, not sampled (one per prompt: give
                the prompts as dicts `{"prompt": ..., "first_frame": ...}`).
            output_type: "np" (uint8 `[1, frames, H, W, 3]`), "pil" (a list of PIL images per clip) or "latent"
                (the image codes `[1, frames, grid, grid]`, not decoded).
            callback: called as `callback(stage, time_index, frames)` when a frame's codes are complete, with the
                decoded uint8 frames `[batch, H, W, 3]` of every clip of the batch at `time_index`, the frame's place
                in the clip (stage "key_frames" or "interpolation").
            speculative: lossless speculative decoding (on by default): each model call also verifies up to
                `num_draft_tokens` drafted codes, and the output is exactly the model's distribution (greedy: exactly
                greedy decoding's tokens). False: one call per sampled token, as plain decoding.
            num_draft_tokens: drafts verified per call, in [1, tokens_per_frame]; None (the default): per stage,
                `KEY_FRAME_DRAFT_TOKENS` (8) for key frames and `INTERPOLATION_DRAFT_TOKENS` (4) for interpolation.
            draft_source: where drafts come from, one of `DRAFT_SOURCES`: "code_table" (the pipeline's draft table:
                the commonest code given the cell's neighbours above and left and the cell in the previous frame,
                else as "previous_frame"), "previous_frame" (the same grid cell of the previous key frame, of the
                previous frame of an interpolation pair, and the row above in the first key frame) or "row_above"
                (the row above inside the frame). None (the default): "code_table" where the pipeline has a draft
                table (`pipe.draft_table`), else "previous_frame". Whatever the source, a position that the last
                verify call judged beyond a refused draft is drafted with that call's argmax there ("look_ahead" in
                the stats; `pipe.look_ahead_drafts = False` turns it off).
            lockstep: advance every batch row by the least accepted (True) instead of each by its own (False).
            recursive_spacings: interpolate again, level after level: after the first interpolation, each entry s
                inserts s - 1 frames between every adjacent pair of frames, all pairs of a level in one batch (e.g.
                4 key frames, spacing 5, `recursive_spacings=(4,)`: 16 frames, then 61).

        Returns:
            per prompt, a `FlashVideoPipelineOutput` with `frames` and `stats` (the stats of the batch it was made in).
        """
        unknown = sorted(set(arguments) - set(CALL_DEFAULTS))
        if unknown:
            raise ValueError(f"Unknown arguments {unknown}; the accepted ones are {sorted(CALL_DEFAULTS)}.")
        if isinstance(arguments.get("recursive_spacings"), list):
            arguments["recursive_spacings"] = tuple(arguments["recursive_spacings"])
        # transformers merges what a call gives with what `__init__` was given, so only the given ones are returned;
        # what a call will run with (defaults, then `__init__`'s, then the call's) is checked, as a whole, up front.
        if hasattr(self, "_forward_params") or arguments:
            given_at_init = {
                **getattr(self, "_preprocess_params", {}), **getattr(self, "_forward_params", {}),
                **getattr(self, "_postprocess_params", {}),
            }  # fmt: skip
            self._check_arguments(**{**CALL_DEFAULTS, **given_at_init, **arguments})
        preprocess = {key: arguments.pop(key) for key in ("first_frame",) if key in arguments}
        postprocess = {key: arguments.pop(key) for key in ("output_type",) if key in arguments}
        return preprocess, arguments, postprocess

    @staticmethod
    def _check_prompt(prompt) -> str:
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(
                f"prompt must be a non-empty string, a dict with one under 'prompt', or a list of them; got {prompt!r}."
            )
        return prompt

    def max_num_frames(self, key_frame_spacing: int, interpolate: bool = True, recursive_spacings=()) -> int:
        """The longest clip the models' serial numbers allow for this spacing (and these recursive levels)."""
        if not interpolate or key_frame_spacing == 1:
            return self.model.config.max_frames
        return (self.model.config.max_frames - 1) * key_frame_spacing * math.prod(recursive_spacings) + 1

    def _check_arguments(
        self, num_frames, key_frame_spacing, interpolate, redundant_free, inherit_ratio, unstable_radius,
        temperature, top_k, top_p, do_sample, guidance_scale, negative_prompt, generator, first_frame, callback,
        speculative, num_draft_tokens, draft_source, lockstep, recursive_spacings, output_type,
    ) -> None:  # fmt: skip
        """Raise a ValueError naming the first argument outside its accepted range (the range in the message)."""
        max_spacing = self.interpolation_model.config.max_frames - 1
        check_int("key_frame_spacing", key_frame_spacing, 1, max_spacing, why=" (the interpolation model's max_frames - 1)")
        if not isinstance(recursive_spacings, tuple) or not all(
            is_int(spacing) and 2 <= spacing <= max_spacing for spacing in recursive_spacings
        ):
            raise ValueError(
                f"recursive_spacings must be a list or tuple of integers in [2, {max_spacing}] (the interpolation "
                f"model's max_frames - 1), one per extra interpolation level, got {recursive_spacings!r}."
            )
        if recursive_spacings and (not interpolate or key_frame_spacing == 1):
            raise ValueError("recursive_spacings needs interpolation: interpolate=True and key_frame_spacing >= 2.")
        most = self.max_num_frames(key_frame_spacing, bool(interpolate), recursive_spacings)
        check_int("num_frames", num_frames, 2, most, why=f" for key_frame_spacing={key_frame_spacing}")
        spacing = key_frame_spacing * math.prod(recursive_spacings)
        if interpolate and (num_frames - 1) % spacing:
            raise ValueError(
                f"num_frames - 1 must be a multiple of key_frame_spacing ({key_frame_spacing}) times the recursive "
                f"spacings {list(recursive_spacings)} = {spacing}, so that the last frame is a key frame; got "
                f"num_frames={num_frames}. Try num_frames={max((num_frames - 1) // spacing, 1) * spacing + 1}."
            )
        check_bool("speculative", speculative)
        check_int(
            "num_draft_tokens", num_draft_tokens, 1, self.model.config.tokens_per_frame, optional=True,
            why=" (tokens_per_frame)",
        )  # fmt: skip
        check_choice("draft_source", draft_source, (None, *DRAFT_SOURCES))
        if draft_source == CODE_TABLE and self.draft_table is None:
            raise ValueError(
                "draft_source='code_table' needs a draft table, and this pipeline has none (its checkpoint has no "
                "draft_table.safetensors): build one with `flashvideo draft-table`, or use draft_source="
                "'previous_frame'."
            )
        check_bool("lockstep", lockstep)
        check_number("inherit_ratio", inherit_ratio, 0, 1)
        check_int("unstable_radius", unstable_radius, 0, self.model.config.code_grid_size, why=" (code_grid_size)")
        _check_sampling(temperature, top_k, top_p, do_sample, source="")
        for model in (self.model, self.interpolation_model):  # the checkpoints' own settings, before any work
            self._sampling_settings(model, temperature, top_k, top_p, do_sample)
        self._guidance_scale(guidance_scale)
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            raise ValueError(f"negative_prompt must be a string or None, got {type(negative_prompt).__name__}.")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}.")
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable or None, got {type(callback).__name__}.")
        self._check_first_frame(first_frame, "first_frame")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")

    def _check_first_frame(self, first_frame, name: str) -> None:
        if first_frame is None:
            return
        size = self.model.config.image_size
        frame = np.asarray(first_frame)
        if frame.dtype != np.uint8 or frame.shape[-3:] != (size, size, 3) or frame.ndim not in (3, 4):
            raise ValueError(
                f"{name} must be a uint8 array [{size}, {size}, 3] (image_size={size}), got dtype {frame.dtype} and "
                f"shape {frame.shape}."
            )
        if frame.ndim == 4 and frame.shape[0] != 1:
            raise ValueError(
                f"{name} must be one frame [{size}, {size}, 3] (or [1, {size}, {size}, 3]), got {frame.shape[0]} "
                "frames; give each prompt its own as {'prompt': ..., 'first_frame': ...}."
            )

    # ------------------------------------------------------------------ stages

    def preprocess(self, inputs: str | dict, first_frame: np.ndarray | None = None) -> dict:
        """One prompt (or `{"prompt": ..., "first_frame": ...}`): its ids, tokenized here once for the whole call,
        and the given first frame as codes (`first_frame_mask` False when there is none)."""
        if isinstance(inputs, dict):
            unknown = sorted(set(inputs) - {"prompt", "first_frame"})
            if unknown:
                raise ValueError(f"a prompt given as a dict takes the keys 'prompt' and 'first_frame', got {unknown}.")
            first_frame = inputs.get("first_frame", first_frame)
            self._check_first_frame(first_frame, "first_frame")
            inputs = inputs.get("prompt")
        text_ids = self.processor.encode_text(self._check_prompt(inputs))
        grid = self.model.config.code_grid_size
        codes = torch.zeros((1, grid, grid), dtype=torch.long)
        if first_frame is not None:
            size = self.model.config.image_size
            frame = np.ascontiguousarray(np.asarray(first_frame).reshape(1, size, size, 3))
            codes = frames_to_codes(self.vqvae, frame, image_size=size).reshape(1, grid, grid).cpu()
        # Tensors with a batch axis of 1: transformers' collator stacks them (and pads the ids) for `batch_size` > 1.
        return {
            "text_ids": torch.tensor([text_ids]),
            "text_length": torch.tensor([len(text_ids)]),
            "first_frame_codes": codes,
            "first_frame_mask": torch.tensor([first_frame is not None]),
        }

    def _forward(self, model_inputs: dict, **params) -> dict:
        """Codes `[batch, num_frames, grid, grid]` of the batch's clips, and their stats (one list entry per clip, the
        same object: the batch's model calls are shared)."""
        params = {**FORWARD_DEFAULTS, **params}
        lengths = model_inputs["text_length"].tolist()
        text_ids = [row[:length].tolist() for row, length in zip(model_inputs["text_ids"], lengths)]
        first_codes, first_mask = model_inputs["first_frame_codes"], model_inputs["first_frame_mask"]
        stats = GenerationStats()
        progress = FrameProgress(
            params["num_frames"], self._decode, params.pop("callback"), enabled=self.show_progress
        )
        videos: list[torch.Tensor | None] = [None] * len(text_ids)
        # Prompts whose token counts match share a batch: their sequences stay aligned, with no padding inside.
        groups: dict[int, list[int]] = {}
        for index, ids in enumerate(text_ids):
            groups.setdefault(len(ids), []).append(index)
        try:
            for indices in groups.values():
                mask = first_mask[indices]
                given = (first_codes[indices], mask) if bool(mask.any()) else None
                codes = self._generate_group([text_ids[i] for i in indices], given, stats, progress, **params)
                for row, index in enumerate(indices):
                    videos[index] = codes[row]
        finally:
            progress.close()
        return {"codes": torch.stack(videos), "stats": [stats] * len(videos)}

    def postprocess(self, model_outputs: dict, output_type: str = "np") -> FlashVideoPipelineOutput:
        """Codes to frames, through the VQ model: uint8 `[1, frames, H, W, 3]` (or PIL images)."""
        stats = model_outputs["stats"]
        # One clip per output: transformers hands a batch's entries out one by one, a single call's as it came.
        stats = stats[0] if isinstance(stats, list) else stats
        if output_type == "latent":
            return FlashVideoPipelineOutput(frames=model_outputs["codes"], stats=stats)
        started = time.perf_counter()
        frames = self._decode(model_outputs["codes"])
        stats.decode.frames += frames.shape[0] * frames.shape[1]
        stats.decode.seconds += time.perf_counter() - started
        if output_type == "pil":
            from PIL import Image

            frames = [[Image.fromarray(frame) for frame in video] for video in frames]
        return FlashVideoPipelineOutput(frames=frames, stats=stats)

    def _decode(self, codes: torch.Tensor) -> np.ndarray:
        return codes_to_frames(self.vqvae, codes)

    def _sampler(
        self, model, temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
        do_sample: bool | None = None, generator: torch.Generator | None = None, guidance_scale: float = 1.0,
        speculative: bool = True, num_draft_tokens: int | None = None, lockstep: bool = False,
        draft_source: str | None = None, stage: str = "key_frames",
    ) -> FrameSampler:  # fmt: skip
        """A sampler for `model`; what the call leaves at None comes from `model.generation_config`. It drafts
        through the pipeline's draft table when `draft_source` resolves to "code_table", with `num_draft_tokens`
        drafts per call (None: the `stage`'s default)."""
        temperature, top_k, top_p, do_sample = self._sampling_settings(model, temperature, top_k, top_p, do_sample)
        processor = build_logits_processor(model.config.image_token_range, temperature, top_k, top_p)
        count = self._draft_count(num_draft_tokens, stage)
        return FrameSampler(
            model, processor, do_sample=do_sample, generator=generator, guidance_scale=guidance_scale,
            num_draft_tokens=count if speculative else 0, lockstep=lockstep,
            static_windows=speculative and count in self.compiled_draft_counts,
            draft_table=self.draft_table if self._draft_source(draft_source) == CODE_TABLE else None,
            look_ahead_start=self._look_ahead_start(stage),
        )  # fmt: skip

    def _draft_count(self, num_draft_tokens: int | None, stage: str) -> int:
        """The call's drafts per verify call; None: the stage's default, at most a frame's tokens."""
        if num_draft_tokens is not None:
            return num_draft_tokens
        default = KEY_FRAME_DRAFT_TOKENS if stage == "key_frames" else INTERPOLATION_DRAFT_TOKENS
        return min(default, self.model.config.tokens_per_frame)

    def _look_ahead_start(self, stage: str) -> int | None:
        """Where look-ahead drafts start after a drawn token (`FrameSampler.look_ahead_start`), per stage; None when
        `look_ahead_drafts` is off."""
        if not self.look_ahead_drafts:
            return None
        return KEY_FRAME_LOOK_AHEAD_START if stage == "key_frames" else INTERPOLATION_LOOK_AHEAD_START

    def _draft_source(self, draft_source: str | None) -> str:
        """The call's draft source; None: "code_table" where the pipeline has a draft table, else "previous_frame"."""
        if draft_source is not None:
            return draft_source
        return CODE_TABLE if self.draft_table is not None else "previous_frame"

    def _guidance_scale(self, guidance_scale: float | None) -> float:
        """The call's guidance scale, else the key-frame model's `generation_config.guidance_scale`, else 1 (off);
        both are checked."""
        _check_guidance_scale(guidance_scale, source="")
        configured = getattr(self.model.generation_config, "guidance_scale", None)
        _check_guidance_scale(configured, source=" (from the key-frame model's generation_config)")
        return float(_first_set(guidance_scale, configured, 1.0))

    def _sampling_settings(self, model, temperature, top_k, top_p, do_sample) -> tuple:
        """(temperature, top_k, top_p, do_sample): the call's, else `model.generation_config`'s, else the defaults."""
        config = model.generation_config
        settings = (
            _first_set(temperature, config.temperature, 1.0),
            _first_set(top_k, config.top_k),
            _first_set(top_p, config.top_p),
            # Unlike generate(), sampling is on unless asked otherwise: greedy decoding gives one clip per prompt.
            _first_set(do_sample, config.do_sample, True),
        )
        stage = "key-frame model" if model is self.model else "interpolation model"
        _check_sampling(*settings, source=f" (from the {stage}'s generation_config)")
        return settings

    def _generate_group(
        self, text_ids, first_frame, stats: GenerationStats, progress: FrameProgress, num_frames, key_frame_spacing,
        interpolate, redundant_free, inherit_ratio, unstable_radius, temperature, top_k, top_p, do_sample,
        guidance_scale, negative_prompt, generator, speculative, num_draft_tokens, draft_source, lockstep,
        recursive_spacings,
    ) -> torch.Tensor:  # fmt: skip
        """Codes `[batch, num_frames, grid, grid]` for prompts of equal token length (given as ids)."""
        sampling = dict(
            temperature=temperature, top_k=top_k, top_p=top_p, do_sample=do_sample, generator=generator,
            speculative=speculative, num_draft_tokens=num_draft_tokens, lockstep=lockstep,
        )  # fmt: skip
        spacings = (key_frame_spacing, *recursive_spacings) if interpolate and key_frame_spacing > 1 else ()
        num_key_frames = (num_frames - 1) // math.prod(spacings) + 1
        first_codes, first_mask = first_frame if first_frame is not None else (None, None)
        video = self.generate_key_frames(
            text_ids, num_key_frames, first_codes, stats, progress, guidance_scale=guidance_scale,
            negative_prompt=negative_prompt, draft_source=draft_source, first_frame_mask=first_mask,
            time_stride=math.prod(spacings), **sampling,
        )  # fmt: skip
        for level, spacing in enumerate(spacings):  # each level interpolates between every adjacent pair of the last
            video = self.interpolate(
                text_ids, video, spacing - 1, stats, progress, redundant_free=redundant_free,
                inherit_ratio=inherit_ratio, unstable_radius=unstable_radius, draft_source=draft_source,
                time_stride=math.prod(spacings[level + 1 :]), **sampling,
            )  # fmt: skip
        return video

    def _to_ids(self, codes: torch.Tensor) -> torch.LongTensor:
        """Code grids `[batch, grid, grid]` as the model's flat ids `[batch, tokens]`: the model boundary."""
        return self.processor.codes_to_ids(codes).flatten(1).to(self.device)

    def _to_codes(self, ids: torch.Tensor) -> torch.LongTensor:
        """Sampled ids `[batch, tokens]` back to code grids `[batch, grid, grid]`."""
        grid = self.model.config.code_grid_size
        return self.processor.ids_to_codes(ids).reshape(-1, grid, grid)

    def generate_key_frames(
        self, prompts: list[str] | list[list[int]], num_key_frames: int, first_frame_codes: torch.Tensor | None = None,
        stats: GenerationStats | None = None, progress: FrameProgress | None = None,
        guidance_scale: float | None = None, negative_prompt: str | None = None, draft_source: str | None = None,
        first_frame_mask: torch.Tensor | None = None, time_stride: int = 1, **sampling,
    ) -> torch.Tensor:  # fmt: skip
        """Key-frame codes `[batch, num_key_frames, grid, grid]`: `[text][SN_i]` fed, frame i sampled (with guidance,
        `[negative_prompt][SN_i]` fed to the unconditional stream).

        `prompts`: captions or their ids (`processor.encode_text`), of one token length. `first_frame_codes`
        `[batch, grid, grid]`: fed as frame 1 (of the rows where `first_frame_mask` is True; all when None).
        `time_stride`: how far apart the key frames are in the clip, for the time indices `progress` reports.

        Example:

        ```python
        >>> codes = pipe.generate_key_frames(["a red circle moving right"], 4, do_sample=False)   # [1, 4, 16, 16]
        ```
        """
        stats = stats or GenerationStats()
        started = time.perf_counter()
        text_ids = [self.processor.text_ids(text) for text in prompts]
        draft_source = self._draft_source(draft_source)
        sampler = self._sampler(
            self.model, guidance_scale=self._guidance_scale(guidance_scale), draft_source=draft_source, **sampling
        )
        negative_ids = self.processor.encode_text(negative_prompt) if negative_prompt else []
        tokens_per_frame = self.model.config.tokens_per_frame
        fixed_ids = fixed_mask = None
        if first_frame_codes is not None:
            fixed_ids = self._to_ids(first_frame_codes)
            rows = torch.ones(len(text_ids), dtype=torch.bool) if first_frame_mask is None else first_frame_mask.bool()
            fixed_mask = rows.to(fixed_ids.device)[:, None].expand_as(fixed_ids).contiguous()
        frames: list[torch.Tensor] = []  # codes [batch, grid, grid] per key frame
        for number in range(1, num_key_frames + 1):
            prefix = torch.tensor([self.processor.keyframe_prefix(ids, number) for ids in text_ids])
            unconditional = None
            if sampler.guided:
                serial = self.processor.layout.serial_token_id(number)
                unconditional = torch.tensor([negative_ids + [serial]] * len(text_ids))
            given = (fixed_ids, fixed_mask) if number == 1 else (None, None)  # the first frame is fed, not sampled
            if draft_source != ROW_ABOVE and frames:
                reference, source = self._to_ids(frames[-1]), "previous_key_frame"
            else:
                reference, source = None, ROW_ABOVE
            ids = sampler.sample_frame(
                prefix, tokens_per_frame, unconditional_prefix=unconditional, fixed_ids=given[0],
                fixed_mask=given[1], reference=reference, draft_source=source, reference_gap=time_stride,
            )  # fmt: skip
            frames.append(self._to_codes(ids))
            if progress is not None:
                progress.frame_done("key_frames", (number - 1) * time_stride, frames[-1])
        stats.key_frames.frames += len(frames) * len(text_ids)
        stats.key_frames.add(sampler.counts, time.perf_counter() - started)
        return torch.stack(frames, dim=1)

    def interpolate(
        self, prompts: list[str] | list[list[int]], key_frames: torch.Tensor, num_inserted: int,
        stats: GenerationStats | None = None, progress: FrameProgress | None = None, redundant_free: bool = False,
        inherit_ratio: float = 0.2, unstable_radius: int = 1, draft_source: str | None = None,
        time_stride: int = 1, **sampling,
    ) -> torch.Tensor:  # fmt: skip
        """Insert `num_inserted` frames between each adjacent pair of `key_frames` (codes `[batch, K, grid, grid]`).

        All pairs of all prompts form one batch. Returns codes `[batch, (K - 1) * (num_inserted + 1) + 1, grid, grid]`.
        `time_stride`: how far apart this level's frames are in the clip, for the time indices `progress` reports.
        """
        stats = stats or GenerationStats()
        started = time.perf_counter()
        batch, num_key_frames, grid = key_frames.shape[:3]
        pairs = num_key_frames - 1
        tokens_per_frame = self.model.config.tokens_per_frame
        pair_ids = [self.processor.text_ids(text) for text in prompts for _ in range(pairs)]
        codes_a = key_frames[:, :-1].reshape(-1, grid, grid).cpu()
        codes_b = key_frames[:, 1:].reshape(-1, grid, grid).cpu()
        ids_a = self._to_ids(codes_a)

        fixed_ids = fixed_mask = None
        if redundant_free:
            classes = classify_tokens(
                codes_a, codes_b, inherit_ratio, unstable_radius, generator=_cpu(sampling.get("generator"))
            )
            fixed_ids, fixed_mask = ids_a, classes.inheritable.flatten(1)

        draft_source = self._draft_source(draft_source)
        sampler = self._sampler(self.interpolation_model, draft_source=draft_source, stage="interpolation", **sampling)
        order = self.interpolation_model.config.interpolation_order  # the order it was trained on
        serial_numbers = self.processor.interpolation_serial_numbers(num_inserted, order)  # A, B, then inserted
        offsets = self.processor.interpolation_time_offsets(num_inserted, order)  # generation order → time
        inserted: list[torch.Tensor] = []  # ids [pairs of all prompts, tokens] per inserted frame
        known = {0: ids_a, num_inserted + 1: self._to_ids(codes_b)}  # ids of the frames known so far, by time offset
        for position in range(2, num_inserted + 2):
            if position == 2:  # [text][SN_1][A][text][SN_{n+2}][B][text][SN_2], one call with the first drafts
                prefix = [
                    self.processor.interpolation_prefix(ids, a, b, num_inserted, order)
                    for ids, a, b in zip(pair_ids, codes_a, codes_b)
                ]
            else:
                prefix = [self.processor.keyframe_prefix(ids, serial_numbers[position]) for ids in pair_ids]
            use_previous = draft_source != ROW_ABOVE
            # Drafts copy the known frame nearest in time (earlier on a tie): the one just before in the forward
            # order; in the outside-in order A, B or a frame generated before, one frame away either way.
            nearest = min(known, key=lambda offset: (abs(offset - offsets[position]), offset))
            inserted.append(
                sampler.sample_frame(
                    torch.tensor(prefix), tokens_per_frame, fixed_ids=fixed_ids, fixed_mask=fixed_mask,
                    reference=known[nearest] if use_previous else None,
                    draft_source="previous_frame" if use_previous else ROW_ABOVE,
                    reference_gap=abs(offsets[position] - nearest) * time_stride,
                )  # fmt: skip
            )
            known[offsets[position]] = inserted[-1]
            if progress is not None:
                frame = self._to_codes(inserted[-1]).reshape(batch, pairs, grid, grid)
                for pair in range(pairs):  # the frame generated at this position sits at p * (n + 1) + its offset
                    time_index = (pair * (num_inserted + 1) + offsets[position]) * time_stride
                    progress.frame_done("interpolation", time_index, frame[:, pair])
        # Generation order A, B, F_2 … → time order A, F_2 … F_{n+1}, B, per pair; then the pairs joined.
        per_pair = torch.stack([codes_a, codes_b, *(self._to_codes(ids).cpu() for ids in inserted)])
        in_time_order = self.processor.reorder_interpolated(per_pair, num_inserted, order)  # [n + 2, pairs, grid, grid]
        segments = in_time_order.transpose(0, 1).reshape(batch, pairs, num_inserted + 2, grid, grid)
        video = torch.cat([segments[:, :, :-1].flatten(1, 2), key_frames[:, -1:].cpu()], dim=1)

        stats.interpolation.frames += batch * pairs * num_inserted
        stats.interpolation.add(sampler.counts, time.perf_counter() - started)
        return video


# Every argument a call takes, with its default (`_sanitize_parameters` checks them and routes them).
CALL_DEFAULTS = dict(
    num_frames=16, key_frame_spacing=5, interpolate=True, redundant_free=True, inherit_ratio=0.2, unstable_radius=1,
    temperature=None, top_k=None, top_p=None, do_sample=None, guidance_scale=None, negative_prompt=None,
    generator=None, first_frame=None, output_type="np", callback=None, speculative=True,
    num_draft_tokens=None, draft_source=None, lockstep=False, recursive_spacings=(),
)  # fmt: skip
FORWARD_DEFAULTS = {key: value for key, value in CALL_DEFAULTS.items() if key not in ("first_frame", "output_type")}
# What `from_pretrained` passes on to `__init__` rather than to the Hub client.
PIPELINE_INIT_KEYS = ("task", "dtype", "torch_dtype", "show_progress", "batch_size", "num_workers", "binary_output")


def missing_interpolation_file(source: str | Path) -> str | None:
    """The first file of the checkpoint's interpolation model that is missing (`interpolation/config.json`, then its
    weights), or None when it is complete. A local directory or a Hub repo id (online or from the cache)."""
    weights = ("model.safetensors", "model.safetensors.index.json")
    if Path(source).is_dir():
        folder = Path(source) / INTERPOLATION_SUBFOLDER
        if not (folder / "config.json").is_file():
            return str(folder / "config.json")
        return None if any((folder / name).is_file() for name in weights) else str(folder / weights[0])
    if not has_interpolation_model(source):
        return f"{source}/{INTERPOLATION_SUBFOLDER}/config.json"
    return None


def load_interpolation_model(source: str | Path) -> FlashVideoForCausalLM:
    """The checkpoint's interpolation model (`interpolation/`); a FileNotFoundError names a missing file."""
    missing = missing_interpolation_file(source)
    if missing is not None:
        raise FileNotFoundError(
            f"The checkpoint {source} has no complete interpolation model: {missing} is missing. Pass "
            f"interpolation_model={KEY_FRAME_MODEL!r} to let the key-frame model interpolate, or an interpolation "
            "model (e.g. one trained with `flashvideo train --stage interpolation`)."
        )
    return FlashVideoForCausalLM.from_pretrained(source, subfolder=INTERPOLATION_SUBFOLDER)


def has_interpolation_model(source: str | Path) -> bool:
    """Whether the checkpoint (a local directory or a Hub repo id, online or from the cache) has `interpolation/`."""
    if Path(source).is_dir():
        return (Path(source) / INTERPOLATION_SUBFOLDER / "config.json").is_file()
    from transformers.utils import cached_file

    try:
        found = cached_file(
            str(source), "config.json", subfolder=INTERPOLATION_SUBFOLDER, _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )  # fmt: skip
    except (OSError, ValueError):  # not a repo id at all, or a repo that cannot be reached
        return False
    return found is not None


def _first_set(*values):
    """The first value that is not None (None if all are); a NumPy scalar becomes the Python number it holds, as
    transformers' sampling checks (`isinstance(top_k, int)`, `isinstance(temperature, float)`) want."""
    value = next((value for value in values if value is not None), None)
    return value.item() if isinstance(value, np.generic) else value


def _check_guidance_scale(guidance_scale, source: str) -> None:
    check_number("guidance_scale", guidance_scale, 1, optional=True, why=" (1: off)", where=source)


def _check_sampling(temperature, top_k, top_p, do_sample, source: str) -> None:
    """Raise a ValueError naming the first invalid sampling setting; None (not set) is valid for each."""
    check_number("temperature", temperature, 0, exclusive_minimum=True, optional=True, where=source)
    check_int("top_k", top_k, 1, optional=True, where=source)
    check_number("top_p", top_p, 0, 1, exclusive_minimum=True, optional=True, where=source)
    check_bool("do_sample", do_sample, optional=True, where=source)


def _cpu(generator: torch.Generator | None) -> torch.Generator | None:
    """Token classification runs on the CPU; a generator on another device cannot drive it."""
    return generator if generator is None or generator.device.type == "cpu" else None
