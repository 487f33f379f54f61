"""`pipeline("text-to-video")`: key frames, then (redundant-free) interpolation between them (FlashVideo §3).

1. Key frames: for key frame i, feed `[text][SN_i]` in one call, then sample its codes recurrently (logits limited
   to image codes). A given `first_frame` is fed, not sampled.
2. Interpolation: every adjacent key-frame pair (A, B) becomes one sample of a batch:
   `[text][SN_1][A][text][SN_{n+2}][B]` is fed, then `[text][SN_j]` + sampled F_j for j = 2 … n+1, and the frames
   are reordered by serial number to A, F_2 … F_{n+1}, B.
3. Redundant-free interpolation: positions where A and B agree, far from any change, are partly inherited from A
   (fed, not sampled); see `redundant_free.py`.
"""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, Pipeline
from transformers.utils import logging

from .modeling_flashvideo import FlashVideoForCausalLM
from .processing_flashvideo import FlashVideoProcessor
from .frame_sampler import ROW_ABOVE, FrameSampler, TokenCounts, add_drafts, build_logits_processor
from .redundant_free import classify_tokens
from .validation import check_bool, check_choice, check_int, check_number, is_int


logger = logging.get_logger(__name__)

INTERPOLATION_SUBFOLDER = "interpolation"
# `interpolation_model=KEY_FRAME_MODEL`: the key-frame model also interpolates (asked for, never assumed).
KEY_FRAME_MODEL = "key_frame_model"
OUTPUT_TYPES = ("np", "pil")
# Where drafts come from: "previous_frame" drafts key frame j from key frame j - 1 and an inserted frame from the
# frame before it in time (A for the first), the first key frame from its own row above; "row_above" always from
# the row above inside the frame being sampled.
DRAFT_SOURCES = ("previous_frame", "row_above")
# Drafts per verify call. Chosen by measurement on the shipped checkpoint (1 thread, 16-frame clips, 2 seeds): a
# single prompt 2.76 / 2.39 / 2.42 / 2.60 / 2.92 s for 2 / 4 / 6 / 8 / 16 drafts (plain decoding 3.59 s); 8 prompts
# at once 12.6 / 12.8 / 12.8 / 15.4 / 18.3 s (plain 12.8 s), where a call's compute, not its overhead, dominates.
DEFAULT_NUM_DRAFT_TOKENS = 4


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
    """Output of `FlashVideoPipeline.__call__`.

    Attributes:
        frames: uint8 array `[batch, frames, H, W, 3]` (`output_type="np"`) or one list of PIL images per prompt.
        stats: tokens sampled vs inherited, model calls and seconds per stage, and overall frames per second.
    """

    frames: np.ndarray | list
    stats: GenerationStats


class FlashVideoPipeline(Pipeline):
    """Text-to-video with FlashVideo: key frames, then (redundant-free) interpolation.

    Components: the key-frame model (`model`), the interpolation model (`interpolation_model`, same class, its own
    weights; defaults to the key-frame model), and a `FlashVideoProcessor` (text tokenizer, VQ image tokenizer and
    the sequence layout). A checkpoint directory holds the key-frame model at the top level, the interpolation
    model under `interpolation/`, and the processor files.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> import flashvideo
    >>> pipe = pipeline("text-to-video", model="path/to/checkpoint")    # or FlashVideoPipeline.from_pretrained(...)
    >>> out = pipe("a red circle moving right", num_frames=16, key_frame_spacing=5, redundant_free=True)
    >>> out.frames.shape, out.stats.frames_per_second
    ((1, 16, 64, 64, 3), ...)
    >>> flashvideo.export_to_video(out.frames[0], "clip.mp4")
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
        interpolation_model: FlashVideoForCausalLM | str | None = None,
        show_progress: bool = True,
        **kwargs,
    ):
        super().__init__(model=model, **kwargs)
        source = getattr(model, "name_or_path", None)
        if processor is None:
            if not source:
                raise ValueError(
                    "processor is required when the model was not loaded from a checkpoint directory."
                )
            processor = FlashVideoProcessor.from_pretrained(source)
        if isinstance(interpolation_model, str):
            if interpolation_model != KEY_FRAME_MODEL:
                raise ValueError(
                    f"interpolation_model must be a FlashVideoForCausalLM, {KEY_FRAME_MODEL!r} (the key-frame model "
                    f"also interpolates) or None (the checkpoint's {INTERPOLATION_SUBFOLDER}/), got {interpolation_model!r}."
                )
            interpolation_model = model
        elif interpolation_model is None and source:
            interpolation_model = load_interpolation_model(source)
        elif interpolation_model is None:
            logger.info("No interpolation model given for an in-memory model: the key-frame model also interpolates.")
            interpolation_model = model
        processor.layout.check_matches(model.config, "the key-frame model's config")
        processor.layout.check_matches(interpolation_model.config, "the interpolation model's config")
        codebook_size = getattr(getattr(processor.image_tokenizer, "config", None), "num_vq_embeddings", None)
        if codebook_size is not None and codebook_size != model.config.image_vocab_size:
            raise ValueError(
                f"The processor's image tokenizer has {codebook_size} codes but the model samples from "
                f"image_vocab_size={model.config.image_vocab_size}; they must match."
            )
        self.processor = processor.to(self.device)
        self.interpolation_model = interpolation_model.to(self.device).eval()
        self.model.eval()
        self.show_progress = show_progress
        self.compiled_num_draft_tokens: int | None = None  # set by `compile_recurrent_step`

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | Path, device: str | torch.device | None = None,
        interpolation_model: FlashVideoForCausalLM | str | None = None, **hub_kwargs,
    ) -> "FlashVideoPipeline":  # fmt: skip
        """Load the models and processor from a checkpoint directory or a Hub repo id (offline from the cache).

        The interpolation model comes from the checkpoint's `interpolation/` unless `interpolation_model` is given
        (`KEY_FRAME_MODEL`: the key-frame model interpolates); a checkpoint without one is refused, naming the file."""
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(pretrained_model_name_or_path), **hub_kwargs))
        model = AutoModelForCausalLM.from_pretrained(path)
        return cls(
            model=model, interpolation_model=interpolation_model, device=device if device is not None else model.device
        )

    def compile_recurrent_step(
        self, num_draft_tokens: int = DEFAULT_NUM_DRAFT_TOKENS, **compile_kwargs
    ) -> "FlashVideoPipeline":
        """Compile the decode step of the key-frame and interpolation models (`torch.compile`): the one-token step
        and speculative decoding's verify calls for `num_draft_tokens` drafts, which calls with that many drafts
        then pad to one length (a token and `num_draft_tokens` drafts), so that every verify call has one shape.

        Sampled tokens are where the time goes; see `FlashVideoModel.compile_recurrent_step`. The first clip pays
        the compilation (once per batch size, length and model). Returns the pipeline.
        """
        for model in {id(model): model for model in (self.model, self.interpolation_model)}.values():
            model.compile_recurrent_step(call_lengths=(1 + num_draft_tokens,), **compile_kwargs)
        self.compiled_num_draft_tokens = num_draft_tokens
        return self

    def save_pretrained(self, save_directory: str | Path, hub_ready: bool = False, **kwargs) -> None:
        """Write the key-frame model, the interpolation model (`interpolation/`, the key-frame model again when it
        also interpolates) and the processor.

        With `hub_ready=True` the config also gets `custom_pipelines` and the directory the pipeline's code, so that
        `pipeline(model=repo, trust_remote_code=True)` works where flashvideo is not installed. transformers then
        always asks for `trust_remote_code`, so plain local checkpoints leave it out: with flashvideo imported,
        `pipeline("text-to-video", model=directory)` loads them as they are.
        """
        if hub_ready:
            super().save_pretrained(save_directory, **kwargs)
        else:
            self.model.save_pretrained(save_directory, **kwargs)
        # Always written (the key-frame model again when it also interpolates), so that loading never has to guess.
        self.interpolation_model.save_pretrained(Path(save_directory) / INTERPOLATION_SUBFOLDER, **kwargs)
        self.processor.save_pretrained(save_directory)

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
        processor, and a FlashVideo model card (with `eval_results` from `flashvideo eval`'s JSON when given).
        Returns the `CommitInfo` (a `str`: the commit URL).
        """
        from .hub import push_pipeline

        if kwargs:
            logger.info(f"push_to_hub ignores {sorted(kwargs)}.")
        return push_pipeline(
            self, repo_id, private=private, token=token, eval_results_path=eval_results_path, tags=tags,
            commit_message=commit_message, commit_description=commit_description, revision=revision,
            create_pr=create_pr,
        )  # fmt: skip

    # The transformers Pipeline protocol: __call__ validates once, then preprocess → _forward → postprocess.

    def _sanitize_parameters(self, **kwargs):
        return {}, kwargs, {}

    def __call__(
        self,
        prompt: str | list[str],
        num_frames: int = 16,
        key_frame_spacing: int = 5,
        interpolate: bool = True,
        redundant_free: bool = True,
        inherit_ratio: float = 0.2,
        unstable_radius: int = 1,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        do_sample: bool | None = None,
        guidance_scale: float | None = None,
        negative_prompt: str | None = None,
        generator: torch.Generator | None = None,
        first_frame: np.ndarray | None = None,
        output_type: str = "np",
        callback: Callable[[str, int, np.ndarray], None] | None = None,
        speculative: bool = True,
        num_draft_tokens: int = DEFAULT_NUM_DRAFT_TOKENS,
        draft_source: str = "previous_frame",
        lockstep: bool = False,
        recursive_spacings: tuple[int, ...] | list[int] = (),
    ) -> FlashVideoPipelineOutput:
        r"""Generate one clip per prompt.

        Args:
            prompt: a prompt or a list of prompts (non-empty).
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
            first_frame: uint8 `[H, W, 3]` (or `[batch, H, W, 3]`) frame to condition on: fed, not sampled.
            output_type: "np" (uint8 `[batch, frames, H, W, 3]`) or "pil" (lists of PIL images).
            callback: called as `callback(stage, frame_index, frames)` when a frame's codes are complete, with the
                decoded uint8 frames `[batch, H, W, 3]` (stage "key_frames" or "interpolation"; `frame_index` is the
                frame's index among the key frames, or among the frames inserted into every pair).
            speculative: lossless speculative decoding (on by default): each model call also verifies up to
                `num_draft_tokens` drafted codes, and the output is exactly the model's distribution (greedy: exactly
                greedy decoding's tokens). False: one call per sampled token, as plain decoding.
            num_draft_tokens: drafts verified per call, in [1, tokens_per_frame] (default `DEFAULT_NUM_DRAFT_TOKENS`).
            draft_source: where drafts come from, one of `DRAFT_SOURCES`: "previous_frame" (the same grid cell of the
                previous key frame, of the previous frame of an interpolation pair, and the row above in the first key
                frame) or "row_above" (the row above inside the frame).
            lockstep: advance every batch row by the least accepted (True) instead of each by its own (False).
            recursive_spacings: interpolate again, level after level: after the first interpolation, each entry s
                inserts s - 1 frames between every adjacent pair of frames, all pairs of a level in one batch (e.g.
                4 key frames, spacing 5, `recursive_spacings=(4,)`: 16 frames, then 61).

        Returns:
            `FlashVideoPipelineOutput` with `frames` and `stats`.
        """
        params = dict(
            num_frames=num_frames, key_frame_spacing=key_frame_spacing, interpolate=interpolate,
            redundant_free=redundant_free, inherit_ratio=inherit_ratio, unstable_radius=unstable_radius,
            temperature=temperature, top_k=top_k, top_p=top_p, do_sample=do_sample, guidance_scale=guidance_scale,
            negative_prompt=negative_prompt, generator=generator, first_frame=first_frame, callback=callback,
            speculative=speculative, num_draft_tokens=num_draft_tokens, draft_source=draft_source, lockstep=lockstep,
            recursive_spacings=tuple(recursive_spacings) if isinstance(recursive_spacings, (list, tuple)) else recursive_spacings,
        )  # fmt: skip
        prompts = self._check_prompts(prompt)
        self._check_arguments(**params)
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        model_inputs = self.preprocess(prompts, first_frame=first_frame)
        model_outputs = self._forward(model_inputs, **{k: v for k, v in params.items() if k != "first_frame"})
        return self.postprocess(model_outputs, output_type=output_type)

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _check_prompts(prompt) -> list[str]:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, (list, tuple)) or not prompts:
            raise ValueError(
                f"prompt must be a non-empty string or a non-empty list of strings, got {prompt!r}."
            )
        for text in prompts:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"prompt must be a non-empty string (or a list of them), got {text!r}.")
        return list(prompts)

    def max_num_frames(self, key_frame_spacing: int, interpolate: bool = True, recursive_spacings=()) -> int:
        """The longest clip the models' serial numbers allow for this spacing (and these recursive levels)."""
        if not interpolate or key_frame_spacing == 1:
            return self.model.config.max_frames
        return (self.model.config.max_frames - 1) * key_frame_spacing * math.prod(recursive_spacings) + 1

    def _check_arguments(
        self, num_frames, key_frame_spacing, interpolate, redundant_free, inherit_ratio, unstable_radius,
        temperature, top_k, top_p, do_sample, guidance_scale, negative_prompt, generator, first_frame, callback,
        speculative, num_draft_tokens, draft_source, lockstep, recursive_spacings,
    ) -> None:  # fmt: skip
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
        check_int("num_draft_tokens", num_draft_tokens, 1, self.model.config.tokens_per_frame, why=" (tokens_per_frame)")
        check_choice("draft_source", draft_source, DRAFT_SOURCES)
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
        if first_frame is not None:
            size = self.model.config.image_size
            frame = np.asarray(first_frame)
            if frame.dtype != np.uint8 or frame.shape[-3:] != (size, size, 3) or frame.ndim not in (3, 4):
                raise ValueError(
                    f"first_frame must be a uint8 array [{size}, {size}, 3] or [batch, {size}, {size}, 3] (image_size="
                    f"{size}), got dtype {frame.dtype} and shape {frame.shape}."
                )

    # ------------------------------------------------------------------ stages

    def preprocess(self, prompts: list[str], first_frame: np.ndarray | None = None) -> dict:
        first_frame_ids = None
        if first_frame is not None:
            frames = np.asarray(first_frame)
            frames = (
                np.broadcast_to(frames, (len(prompts), *frames.shape[-3:])) if frames.ndim == 3 else frames
            )
            if frames.shape[0] != len(prompts):
                raise ValueError(
                    f"first_frame has {frames.shape[0]} frames but there are {len(prompts)} prompts; give one frame or "
                    "one per prompt."
                )
            first_frame_ids = self.processor.codes_to_ids(
                self.processor.encode_frames(np.ascontiguousarray(frames))
            )
            first_frame_ids = first_frame_ids.reshape(len(prompts), -1)
        return {"prompts": prompts, "first_frame_ids": first_frame_ids}

    def _forward(self, model_inputs: dict, **params) -> dict:
        prompts, first_frame_ids = model_inputs["prompts"], model_inputs["first_frame_ids"]
        stats = GenerationStats()
        videos: list[torch.Tensor | None] = [None] * len(prompts)
        # Prompts whose token counts match share a batch: their sequences stay aligned, with no padding inside.
        groups: dict[int, list[int]] = {}
        for index, text in enumerate(prompts):
            groups.setdefault(len(self.processor.encode_text(text)), []).append(index)
        for indices in groups.values():
            group_first = first_frame_ids[indices] if first_frame_ids is not None else None
            ids = self._generate_group([prompts[i] for i in indices], group_first, stats, **params)
            for row, index in enumerate(indices):
                videos[index] = ids[row]
        return {"ids": torch.stack(videos), "stats": stats}

    def postprocess(self, model_outputs: dict, output_type: str = "np") -> FlashVideoPipelineOutput:
        stats = model_outputs["stats"]
        started = time.perf_counter()
        grid = self.model.config.code_grid_size
        codes = self.processor.ids_to_codes(model_outputs["ids"])
        codes = codes.reshape(*codes.shape[:2], grid, grid)
        frames = self.processor.decode_frames(codes)
        stats.decode.frames = frames.shape[0] * frames.shape[1]
        stats.decode.seconds = time.perf_counter() - started
        if output_type == "pil":
            from PIL import Image

            frames = [[Image.fromarray(frame) for frame in video] for video in frames]
        return FlashVideoPipelineOutput(frames=frames, stats=stats)

    def _sampler(
        self, model, temperature: float | None = None, top_k: int | None = None, top_p: float | None = None,
        do_sample: bool | None = None, generator: torch.Generator | None = None, guidance_scale: float = 1.0,
        speculative: bool = True, num_draft_tokens: int = DEFAULT_NUM_DRAFT_TOKENS, lockstep: bool = False,
    ) -> FrameSampler:  # fmt: skip
        """A sampler for `model`; what the call leaves at None comes from `model.generation_config`."""
        temperature, top_k, top_p, do_sample = self._sampling_settings(model, temperature, top_k, top_p, do_sample)
        processor = build_logits_processor(model.config.image_token_range, temperature, top_k, top_p)
        return FrameSampler(
            model, processor, do_sample=do_sample, generator=generator, guidance_scale=guidance_scale,
            num_draft_tokens=num_draft_tokens if speculative else 0, lockstep=lockstep,
            static_windows=speculative and num_draft_tokens == self.compiled_num_draft_tokens,
        )  # fmt: skip

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

    def _report_frame(self, callback, stage: str, frame_index: int, ids: torch.Tensor) -> None:
        if callback is not None:
            grid = self.model.config.code_grid_size
            codes = self.processor.ids_to_codes(ids).reshape(-1, grid, grid)
            callback(stage, frame_index, self.processor.decode_frames(codes))

    def _generate_group(
        self, prompts, first_frame_ids, stats: GenerationStats, num_frames, key_frame_spacing, interpolate,
        redundant_free, inherit_ratio, unstable_radius, temperature, top_k, top_p, do_sample, guidance_scale,
        negative_prompt, generator, callback, speculative, num_draft_tokens, draft_source, lockstep, recursive_spacings,
    ) -> torch.Tensor:  # fmt: skip
        """Token ids `[batch, num_frames, tokens_per_frame]` for prompts of equal token length."""
        sampling = dict(
            temperature=temperature, top_k=top_k, top_p=top_p, do_sample=do_sample, generator=generator,
            speculative=speculative, num_draft_tokens=num_draft_tokens, lockstep=lockstep,
        )  # fmt: skip
        spacings = (key_frame_spacing, *recursive_spacings) if interpolate and key_frame_spacing > 1 else ()
        num_key_frames = (num_frames - 1) // math.prod(spacings) + 1
        video = self.generate_key_frames(
            prompts, num_key_frames, first_frame_ids, stats, callback, guidance_scale=guidance_scale,
            negative_prompt=negative_prompt, draft_source=draft_source, **sampling,
        )  # fmt: skip
        for spacing in spacings:  # each level interpolates between every adjacent pair of the one before
            video = self.interpolate(
                prompts, video, spacing - 1, stats, callback, redundant_free=redundant_free,
                inherit_ratio=inherit_ratio, unstable_radius=unstable_radius, draft_source=draft_source, **sampling,
            )  # fmt: skip
        return video

    def generate_key_frames(
        self, prompts: list[str], num_key_frames: int, first_frame_ids: torch.Tensor | None = None,
        stats: GenerationStats | None = None, callback=None, guidance_scale: float | None = None,
        negative_prompt: str | None = None, draft_source: str = "previous_frame", **sampling,
    ) -> torch.Tensor:  # fmt: skip
        """Key-frame ids `[batch, num_key_frames, tokens_per_frame]`: `[text][SN_i]` fed, frame i sampled (with
        guidance, `[negative_prompt][SN_i]` fed to the unconditional stream)."""
        stats = stats or GenerationStats()
        started = time.perf_counter()
        sampler = self._sampler(self.model, guidance_scale=self._guidance_scale(guidance_scale), **sampling)
        negative_ids = self.processor.encode_text(negative_prompt) if negative_prompt else []
        tokens_per_frame = self.model.config.tokens_per_frame
        frames = []
        for number in tqdm(range(1, num_key_frames + 1), desc="key frames", disable=not self.show_progress):
            prefix = torch.tensor([self.processor.keyframe_prefix(text, number) for text in prompts])
            unconditional = None
            if sampler.guided:
                serial = self.processor.layout.serial_token_id(number)
                unconditional = torch.tensor([negative_ids + [serial]] * len(prompts))
            fixed_ids = fixed_mask = None
            if number == 1 and first_frame_ids is not None:  # the given first frame is fed with its prefix, not sampled
                fixed_ids, fixed_mask = first_frame_ids, torch.ones_like(first_frame_ids, dtype=torch.bool)
            if draft_source == "previous_frame" and frames:
                reference, source = frames[-1], "previous_key_frame"
            else:
                reference, source = None, ROW_ABOVE
            frame = sampler.sample_frame(
                prefix, tokens_per_frame, unconditional_prefix=unconditional, fixed_ids=fixed_ids,
                fixed_mask=fixed_mask, reference=reference, draft_source=source,
            )  # fmt: skip
            frames.append(frame)
            self._report_frame(callback, "key_frames", number - 1, frame)
        stats.key_frames.frames += len(frames) * len(prompts)
        stats.key_frames.add(sampler.counts, time.perf_counter() - started)
        return torch.stack(frames, dim=1)

    def interpolate(
        self, prompts: list[str], key_frames: torch.Tensor, num_inserted: int, stats: GenerationStats | None = None,
        callback=None, redundant_free: bool = False, inherit_ratio: float = 0.2, unstable_radius: int = 1,
        draft_source: str = "previous_frame", **sampling,
    ) -> torch.Tensor:  # fmt: skip
        """Insert `num_inserted` frames between each adjacent pair of `key_frames` `[batch, K, tokens]`.

        All pairs of all prompts form one batch. Returns ids `[batch, (K - 1) * (num_inserted + 1) + 1, tokens]`.
        """
        stats = stats or GenerationStats()
        started = time.perf_counter()
        batch, num_key_frames, tokens_per_frame = key_frames.shape
        grid = self.model.config.code_grid_size
        pair_texts = [text for text in prompts for _ in range(num_key_frames - 1)]
        frames_a = key_frames[:, :-1].reshape(-1, tokens_per_frame)
        frames_b = key_frames[:, 1:].reshape(-1, tokens_per_frame)
        codes_a = self.processor.ids_to_codes(frames_a).reshape(-1, grid, grid).cpu()
        codes_b = self.processor.ids_to_codes(frames_b).reshape(-1, grid, grid).cpu()

        fixed_ids = fixed_mask = None
        if redundant_free:
            classes = classify_tokens(
                codes_a, codes_b, inherit_ratio, unstable_radius, generator=_cpu(sampling.get("generator"))
            )
            fixed_ids, fixed_mask = frames_a, classes.inheritable.flatten(1)

        sampler = self._sampler(self.interpolation_model, **sampling)
        inserted = []
        for number in tqdm(range(2, num_inserted + 2), desc="interpolation", disable=not self.show_progress):
            if number == 2:  # [text][SN_1][A][text][SN_{n+2}][B][text][SN_2], one call with the first drafts
                prefix = [
                    self.processor.interpolation_prefix(t, a, b, num_inserted)
                    for t, a, b in zip(pair_texts, codes_a, codes_b)
                ]
            else:
                prefix = [self.processor.keyframe_prefix(t, number) for t in pair_texts]
            use_previous = draft_source == "previous_frame"
            inserted.append(
                sampler.sample_frame(
                    torch.tensor(prefix), tokens_per_frame, fixed_ids=fixed_ids, fixed_mask=fixed_mask,
                    reference=(inserted[-1] if inserted else frames_a) if use_previous else None,
                    draft_source="previous_frame" if use_previous else ROW_ABOVE,
                )  # fmt: skip
            )
            self._report_frame(callback, "interpolation", number - 2, inserted[-1])
        # Generation order A, B, F_2 … F_{n+1} → time order A, F_2 … F_{n+1}, B, per pair.
        per_pair = torch.stack([frames_a.to(self.device), frames_b.to(self.device), *inserted], dim=0)
        in_time_order = self.processor.reorder_interpolated(per_pair, num_inserted)  # [n + 2, pairs, tokens]
        segments = in_time_order.permute(1, 0, 2).reshape(
            batch, num_key_frames - 1, num_inserted + 2, tokens_per_frame
        )
        video = torch.cat(
            [segments[:, :, :-1].reshape(batch, -1, tokens_per_frame), key_frames[:, -1:]], dim=1
        )

        stats.interpolation.frames += batch * (num_key_frames - 1) * num_inserted
        stats.interpolation.add(sampler.counts, time.perf_counter() - started)
        return video


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
