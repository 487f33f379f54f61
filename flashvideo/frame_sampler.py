"""Sampling image-code frames from a FlashVideo model through its RetNetCache.

Text and serial-number tokens are fed, never sampled; image codes are sampled one at a time in recurrent form,
with logits restricted to the image-code range. Tokens known in advance (a given first frame, the key frames of
an interpolation pair, inherited tokens of redundant-free interpolation) are fed in runs, one parallel or
chunkwise call per run. Sampling applies the same processors, in the same order, as `model.generate()`, so both
give the same tokens for the same seed.

With classifier-free guidance a second, unconditional stream (its own prefix, e.g. without the text, then the same
image codes) runs beside the conditional one, and tokens are sampled from
`log p(x | uncond) + guidance_scale * (log p(x | text) - log p(x | uncond))`, as transformers'
`UnbatchedClassifierFreeGuidanceLogitsProcessor` computes it.
"""

from dataclasses import dataclass

import torch
from transformers.generation import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .modeling_flashvideo import FlashVideoForCausalLM, RetNetCache


class ImageCodesOnlyLogitsProcessor(LogitsProcessor):
    """Sets every logit outside the image-code range `[start, end)` to -inf, so only image codes are sampled.

    Example:

    ```python
    >>> restrict = ImageCodesOnlyLogitsProcessor(model.config.image_token_range)
    >>> model.generate(prompt_ids, logits_processor=[restrict], max_new_tokens=model.config.tokens_per_frame)
    ```
    """

    def __init__(self, image_token_range: tuple[int, int]):
        self.start, self.end = image_token_range

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        restricted = torch.full_like(scores, -float("inf"))
        restricted[:, self.start : self.end] = scores[:, self.start : self.end]
        return restricted


def build_logits_processor(
    image_token_range: tuple[int, int],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> LogitsProcessorList:
    """The image-code restriction followed by the warpers in `generate()`'s order (temperature, top-k, top-p)."""
    processors = LogitsProcessorList([ImageCodesOnlyLogitsProcessor(image_token_range)])
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k=top_k))
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=top_p))
    return processors


@dataclass
class TokenCounts:
    """Image tokens sampled by the model and fed (given or inherited), and the model calls made in sequence.

    `model_calls` counts forward passes, one per sampled position and one per fed run, whatever the batch size:
    decoding is sequential in them, so they bound the speed more than the token counts do.
    """

    sampled: int = 0
    inherited: int = 0
    model_calls: int = 0


class FrameSampler:
    """Feeds prefixes and samples frames for a batch of sequences that share one `RetNetCache`.

    Example:

    ```python
    >>> sampler = FrameSampler(model, build_logits_processor(model.config.image_token_range, top_k=100))
    >>> logits = sampler.feed(prefix_ids)                 # [text][SN_1], one call
    >>> frame = sampler.sample_frame(logits, model.config.tokens_per_frame)
    >>> guided = FrameSampler(model, build_logits_processor(model.config.image_token_range), guidance_scale=3.0)
    >>> logits = guided.feed(prefix_ids, unconditional_ids=serial_number_ids)  # [text][SN_1] and [SN_1]
    ```
    """

    def __init__(
        self,
        model: FlashVideoForCausalLM,
        logits_processor: LogitsProcessorList,
        do_sample: bool = True,
        generator: torch.Generator | None = None,
        guidance_scale: float = 1.0,
    ):
        self.model = model
        self.logits_processor = logits_processor
        self.do_sample = do_sample
        self.generator = generator
        self.guidance_scale = guidance_scale
        # Created by the model on the first call, so that it is always the model's own RetNetCache class (a
        # checkpoint loaded with trust_remote_code brings its own copy of the modelling code).
        self.cache: RetNetCache | None = None
        self.unconditional_cache: RetNetCache | None = None
        self.counts = TokenCounts()

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    def _run(self, ids: torch.LongTensor, cache: RetNetCache | None) -> tuple[torch.FloatTensor, RetNetCache]:
        output = self.model(ids.to(self.model.device), cache=cache, use_cache=True, logits_to_keep=1)
        self.counts.model_calls += 1
        return output.logits[:, -1, :].to(dtype=torch.float32), output.cache

    @torch.inference_mode()
    def feed(
        self, ids: torch.LongTensor, unconditional_ids: torch.LongTensor | None = None
    ) -> torch.FloatTensor:
        """Run `ids` `[batch, length]` through the model in one call (two with guidance); returns the last
        position's logits.

        With guidance the unconditional stream is fed `unconditional_ids` (its own prefix; its length may differ)
        or, when None, the same `ids` (image codes, sampled or fixed), and the guided log-probabilities are returned.
        """
        logits, self.cache = self._run(ids, self.cache)
        if not self.guided:
            return logits
        fed = ids if unconditional_ids is None else unconditional_ids
        unconditional, self.unconditional_cache = self._run(fed, self.unconditional_cache)
        conditional, unconditional = logits.log_softmax(dim=-1), unconditional.log_softmax(dim=-1)
        return unconditional + self.guidance_scale * (conditional - unconditional)

    def _next_token(self, logits: torch.FloatTensor) -> torch.LongTensor:
        # Each processor called directly: LogitsProcessorList.__call__ inspects every processor's signature on
        # every call (35–80 µs per token on this project's CPU, a few percent of a compiled decode step). Same
        # processors, same order, same scores.
        scores = logits
        for processor in self.logits_processor:
            scores = processor(None, scores)
        if not self.do_sample:
            return scores.argmax(dim=-1)
        probabilities = torch.softmax(scores, dim=-1)
        return torch.multinomial(probabilities, num_samples=1, generator=self.generator).squeeze(1)

    def sample_frame(
        self,
        logits: torch.FloatTensor,
        num_tokens: int,
        fixed_ids: torch.LongTensor | None = None,
        fixed_mask: torch.BoolTensor | None = None,
    ) -> torch.LongTensor:
        """Generate `num_tokens` image tokens after the position whose `logits` are given.

        Where `fixed_mask` `[batch, num_tokens]` is True the token is taken from `fixed_ids` instead of sampled;
        positions fixed for the whole batch are fed in runs, one call per run. Returns the ids `[batch, num_tokens]`;
        every token, sampled or fixed, has been fed into the state afterwards.
        """
        batch = logits.shape[0]
        tokens = torch.empty(batch, num_tokens, dtype=torch.long, device=logits.device)
        num_fixed = 0
        all_fixed = [False] * num_tokens
        if fixed_mask is not None:
            fixed_mask = fixed_mask.to(logits.device)
            fixed_ids = fixed_ids.to(logits.device)
            all_fixed = fixed_mask.all(dim=0).tolist()
            num_fixed = int(fixed_mask.sum())
        self.counts.inherited += num_fixed
        self.counts.sampled += batch * num_tokens - num_fixed
        position = 0
        while position < num_tokens:
            if all_fixed[position]:
                run_end = position
                while run_end < num_tokens and all_fixed[run_end]:
                    run_end += 1
                tokens[:, position:run_end] = fixed_ids[:, position:run_end]
                logits = self.feed(tokens[:, position:run_end])
                position = run_end
            else:
                token = self._next_token(logits)
                if fixed_mask is not None:
                    token = torch.where(fixed_mask[:, position], fixed_ids[:, position], token)
                tokens[:, position] = token
                logits = self.feed(token[:, None])
                position += 1
        return tokens
