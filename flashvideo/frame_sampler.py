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

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.generation import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .modeling_flashvideo import FlashVideoForCausalLM, RetNetCache
from .speculative import verify_drafts


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


ROW_ABOVE = "row_above"


@dataclass
class TokenCounts:
    """What a sampler did: image tokens the model decided (`sampled`, accepted drafts included) and fed from elsewhere
    (`inherited`: given or inherited), drafts verified and accepted (in total and per draft source), and the model
    calls made in sequence.

    `model_calls` counts forward passes whatever the batch size (two streams with guidance count two): decoding is
    sequential in them, so they bound the speed more than the token counts do.
    """

    sampled: int = 0
    inherited: int = 0
    drafted: int = 0
    accepted: int = 0
    model_calls: int = 0
    drafts_by_source: dict[str, list[int]] = field(default_factory=dict)  # source -> [drafted, accepted]

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")


class _Stream:
    """One sequence of calls through the model: its `RetNetCache` and the tokens decided but not yet fed, per row."""

    def __init__(self, batch: int, device: torch.device):
        self.cache: RetNetCache | None = None
        self.pending = torch.zeros(batch, 0, dtype=torch.long, device=device)
        self.pending_lengths = torch.zeros(batch, dtype=torch.long, device=device)

    def queue(self, ids: torch.LongTensor) -> None:
        """Append `ids` `[batch, n]` to what is waiting to be fed."""
        lengths = torch.full_like(self.pending_lengths, ids.shape[1])
        self.pending = _concatenate_ragged(self.pending, self.pending_lengths, ids, lengths)
        self.pending_lengths = self.pending_lengths + lengths

    def replace(self, rows: torch.BoolTensor, token: torch.LongTensor, has_token: torch.BoolTensor) -> None:
        """In `rows`, what waits becomes `token` `[batch]` where `has_token`, else nothing; other rows keep theirs."""
        if not self.pending.shape[1]:
            self.pending = token[:, None].clone()
        self.pending[:, 0] = torch.where(rows, token, self.pending[:, 0])
        self.pending_lengths = torch.where(rows, has_token.long(), self.pending_lengths)


def _concatenate_ragged(
    first: torch.Tensor, first_lengths: torch.Tensor, second: torch.Tensor, second_lengths: torch.Tensor
) -> torch.Tensor:
    """Row b: `first[b, :first_lengths[b]]` then `second[b, :second_lengths[b]]`, right-padded with the pad id 0."""
    width = int((first_lengths + second_lengths).max()) if first.shape[0] else 0
    columns = torch.arange(width, device=first.device)[None, :]
    from_first = first.gather(1, columns.clamp(max=max(first.shape[1] - 1, 0)).expand(first.shape[0], -1)) \
        if first.shape[1] else torch.zeros(first.shape[0], width, dtype=first.dtype, device=first.device)
    into_second = columns - first_lengths[:, None]
    from_second = second.gather(1, into_second.clamp(0, max(second.shape[1] - 1, 0))) if second.shape[1] \
        else torch.zeros_like(from_first)
    in_second = (into_second >= 0) & (into_second < second_lengths[:, None])
    return torch.where(columns < first_lengths[:, None], from_first, torch.where(in_second, from_second, 0))


class FrameSampler:
    """Samples frames of image codes for a batch of sequences that share a `RetNetCache`, speculatively or not.

    Tokens known in advance (a prefix `[text][SN_i]`, a given frame, inherited tokens) are fed, never sampled. With
    `num_draft_tokens=k > 0`, every call also carries up to k drafts — the code at the same grid cell of a reference
    frame already known, or of the row above inside the frame — which the call's outputs verify (`speculative.py`:
    exactly the model's distribution; greedy: exactly greedy decoding). The first token not accepted is drawn from
    the model and fed as the first token of the next call; the cache is rolled back to the accepted prefix
    (`RetNetCache.rewind`), per row, so rows advance by their own amounts (`lockstep=True`: all by the least). Fixed
    tokens ride in the same calls, always accepted, so a drawn token and the run of fixed tokens after it cost one
    call (redundant-free interpolation). With `k = 0` and nothing fixed this is plain decoding, one call per token,
    with the same tokens as `model.generate()` for the same seed.

    Example:

    ```python
    >>> sampler = FrameSampler(model, build_logits_processor(model.config.image_token_range, top_k=100), num_draft_tokens=16)
    >>> first = sampler.sample_frame(prefix_ids, model.config.tokens_per_frame)                # drafts from the row above
    >>> second = sampler.sample_frame(next_prefix_ids, model.config.tokens_per_frame, reference=first)  # from frame 1
    >>> sampler.counts.accepted / sampler.counts.drafted
    ```
    """

    def __init__(
        self,
        model: FlashVideoForCausalLM,
        logits_processor: LogitsProcessorList,
        do_sample: bool = True,
        generator: torch.Generator | None = None,
        guidance_scale: float = 1.0,
        num_draft_tokens: int = 0,
        lockstep: bool = False,
        static_windows: bool = False,
    ):
        self.model = model
        self.logits_processor = logits_processor
        self.do_sample = do_sample
        self.generator = generator
        self.guidance_scale = guidance_scale
        self.num_draft_tokens = num_draft_tokens
        self.lockstep = lockstep
        # Every verify call holds exactly one pending token and `num_draft_tokens` window positions (fixed tokens
        # included), padded: one shape for a compiled model (`FlashVideoPipeline.compile_recurrent_step`).
        self.static_windows = static_windows and num_draft_tokens > 0
        self.grid = model.config.code_grid_size
        self.counts = TokenCounts()
        # Created on the first call (the batch size comes with it); each holds a cache made by the model itself, so
        # that it is always the model's own RetNetCache class (a checkpoint loaded with trust_remote_code brings its
        # own copy of the modelling code).
        self.stream: _Stream | None = None
        self.unconditional_stream: _Stream | None = None

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    @property
    def speculative(self) -> bool:
        return self.num_draft_tokens > 0

    def _streams(self) -> list[_Stream]:
        return [self.stream] + ([self.unconditional_stream] if self.guided else [])

    def _start(self, batch: int) -> None:
        if self.stream is None:
            device = self.model.device
            self.stream = _Stream(batch, device)
            self.unconditional_stream = _Stream(batch, device)

    def _call(
        self, stream: _Stream, window: torch.LongTensor, window_lengths: torch.LongTensor, width: int,
        active: torch.BoolTensor,
    ) -> torch.FloatTensor:  # fmt: skip
        """Feed each active row's pending tokens then its window in one call (the other rows are fed a pad and rolled
        back); returns the float32 logits `[batch, width + 1, vocab]` of the positions that predict window positions
        0 … width (the last pending token's and the window's)."""
        pending_lengths = torch.where(active, stream.pending_lengths, 0)
        ids = _concatenate_ragged(stream.pending, pending_lengths, window, window_lengths)
        if self.static_windows and ids.shape[1] < 1 + width:  # a row's pending token and a full window, padded
            ids = nn.functional.pad(ids, (0, 1 + width - ids.shape[1]))
        # Logits only for the positions read below: from the earliest last-pending-token on.
        first_read = int(pending_lengths[active].min()) - 1
        output = self.model(
            ids, cache=stream.cache, use_cache=True, logits_to_keep=ids.shape[1] - first_read, check_inputs=False
        )
        stream.cache = output.cache
        self.counts.model_calls += 1
        read = (pending_lengths - 1 - first_read).clamp(min=0)[:, None] + torch.arange(width + 1, device=ids.device)
        logits = output.logits.gather(1, read.clamp(max=output.logits.shape[1] - 1)[..., None].expand(-1, -1, output.logits.shape[-1]))
        return logits.to(dtype=torch.float32)

    def _process(self, logits: torch.FloatTensor) -> torch.FloatTensor:
        # Each processor called directly: LogitsProcessorList.__call__ inspects every processor's signature on
        # every call (35–80 µs per token on this project's CPU). Same processors, same order, same scores.
        shape = logits.shape
        scores = logits.reshape(-1, shape[-1])
        for processor in self.logits_processor:
            scores = processor(None, scores)
        return scores.reshape(shape)

    def _windows(
        self, tokens: torch.LongTensor, decided: torch.LongTensor, fixed_ids: torch.LongTensor,
        fixed_mask: torch.BoolTensor, reference: torch.LongTensor | None,
    ) -> tuple[torch.LongTensor, torch.BoolTensor, torch.LongTensor]:  # fmt: skip
        """Each row's window from its first undecided position: `(window, is_draft, lengths)`.

        A window holds every fixed position and up to `num_draft_tokens` drafts; without drafts, the run of fixed
        positions only. Drafts: `reference` at the same cell, or (None) the row above, the last decided token in the
        frame's first row.
        """
        batch, num_tokens = tokens.shape
        positions = torch.arange(num_tokens, device=tokens.device)
        ahead = positions[None, :] >= decided[:, None]
        drafted = ~fixed_mask & ahead
        if self.speculative and reference is None:
            # No row above and nothing decided yet: the frame's first token has no draft.
            drafted = drafted & (decided[:, None] > 0)
        limit = self.num_draft_tokens if self.speculative else 0
        blocked = (~fixed_mask & ahead) & ~drafted if self.speculative else (~fixed_mask & ahead)
        count = drafted.long().cumsum(dim=1)
        in_window = ahead & (count <= limit) & (blocked.long().cumsum(dim=1) == 0)
        if self.static_windows:
            in_window &= positions[None, :] < decided[:, None] + limit
        lengths = in_window.sum(dim=1)
        width = limit if self.static_windows else int(lengths.max())
        window_positions = (decided[:, None] + torch.arange(width, device=tokens.device)).clamp(max=num_tokens - 1)
        if reference is not None:
            values = torch.where(fixed_mask, fixed_ids, reference)
        else:
            values = self._row_above(tokens, decided, fixed_ids, fixed_mask, width)
        window = values.gather(1, window_positions)
        return window, ~fixed_mask.gather(1, window_positions), lengths

    def _row_above(
        self, tokens: torch.LongTensor, decided: torch.LongTensor, fixed_ids: torch.LongTensor,
        fixed_mask: torch.BoolTensor, width: int,
    ) -> torch.LongTensor:  # fmt: skip
        """Drafts from the row above (from the last decided token in the first row), chained through the window."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
        source = torch.where(positions >= self.grid, positions - self.grid, (decided[:, None] - 1).clamp(min=0))
        values = tokens.clone()
        for _ in range(width // self.grid + 1):  # each pass resolves drafts one more row into the window
            drafts = torch.where(fixed_mask, fixed_ids, values.gather(1, source))
            values = torch.where(positions >= decided[:, None], drafts, tokens)
        return values

    def _distributions(
        self, window: torch.LongTensor, window_lengths: torch.LongTensor, width: int, active: torch.BoolTensor
    ) -> torch.Tensor:
        """One call per stream; the processed scores `[batch, width + 1, image codes]` of window positions 0 … width,
        over the image codes only (index c is token `image_token_range[0] + c`).

        Slicing the logits to the image codes is the image-code restriction, done before the other processors rather
        than by them: the scores differ by a constant per row at most (guidance's log-softmax normalises over fewer
        tokens), which temperature, top-k, top-p and the softmax all ignore, so the distributions are the same.
        """
        start, end = self.model.config.image_token_range
        logits = [self._call(stream, window, window_lengths, width, active)[..., start:end] for stream in self._streams()]
        scores = self._guide(*logits)
        shape = scores.shape
        scores = scores.reshape(-1, shape[-1])
        for processor in self.logits_processor:
            if not isinstance(processor, ImageCodesOnlyLogitsProcessor):  # done by the slicing above
                scores = processor(None, scores)
        return scores.reshape(shape)

    @torch.inference_mode()
    def sample_frame(
        self,
        prefix: torch.LongTensor,
        num_tokens: int,
        unconditional_prefix: torch.LongTensor | None = None,
        fixed_ids: torch.LongTensor | None = None,
        fixed_mask: torch.BoolTensor | None = None,
        reference: torch.LongTensor | None = None,
        draft_source: str | None = None,
    ) -> torch.LongTensor:
        """Feed `prefix` `[batch, P]` (e.g. `[text][SN_i]`; with guidance the unconditional stream is fed
        `unconditional_prefix`), then decide a frame of `num_tokens` image tokens. Returns the ids `[batch, num_tokens]`.

        Where `fixed_mask` `[batch, num_tokens]` is True the token is `fixed_ids`'s, fed and never sampled. Drafts come
        from `reference` `[batch, num_tokens]` (a frame already known; counted under `draft_source`) or, when None,
        from the row above. The frame's last decided token may still be waiting to be fed: it rides in the next call.
        """
        batch = prefix.shape[0]
        device = self.model.device
        self._start(batch)
        self.stream.queue(prefix.to(device))
        if self.guided:
            self.unconditional_stream.queue((prefix if unconditional_prefix is None else unconditional_prefix).to(device))
        if fixed_mask is None:
            fixed_mask = torch.zeros(batch, num_tokens, dtype=torch.bool, device=device)
            fixed_ids = torch.zeros(batch, num_tokens, dtype=torch.long, device=device)
        fixed_mask, fixed_ids = fixed_mask.to(device), fixed_ids.to(device)
        reference = None if reference is None else reference.to(device)
        source = draft_source or (ROW_ABOVE if reference is None else "reference")
        self.counts.inherited += int(fixed_mask.sum())
        self.counts.sampled += batch * num_tokens - int(fixed_mask.sum())
        if not self.speculative and not bool(fixed_mask.any()):
            return self._sample_plain(num_tokens)
        tokens = torch.zeros(batch, num_tokens, dtype=torch.long, device=device)
        decided = torch.zeros(batch, dtype=torch.long, device=device)
        while bool((decided < num_tokens).any()):
            window, is_draft, window_lengths = self._windows(tokens, decided, fixed_ids, fixed_mask, reference)
            width = window.shape[1]
            active = decided < num_tokens
            scores = self._distributions(window, window_lengths, width, active)
            image_start = self.model.config.image_token_range[0]
            # Windows in code indices (a fixed token outside the image codes, never judged, is clamped harmlessly).
            codes = (window - image_start).clamp(0, scores.shape[-1] - 1)
            accepted, drawn = verify_drafts(scores, codes, is_draft, window_lengths, self.do_sample, self.generator)
            drawn = drawn + image_start
            next_token = drawn  # the token at the first position not accepted
            if self.lockstep:
                # Every row advances by the least accepted; a row that accepted more takes its own accepted token
                # there, a valid draw (where to cut depends only on tokens already decided, a stopping time).
                least = accepted[active].min()
                at_least = window.gather(1, least.clamp(max=max(width - 1, 0)).expand(batch, 1))[:, 0] if width else drawn
                next_token = torch.where(accepted > least, at_least, drawn)
                accepted = torch.where(active, least, 0)
            self._count(is_draft, window_lengths, accepted, active, source)
            self._commit(accepted, active)
            # Write the accepted window positions and the next token into the frame.
            offsets = torch.arange(width + 1, device=device)[None, :]
            positions = decided[:, None] + offsets
            values = torch.where(offsets == accepted[:, None], next_token[:, None], torch.cat([window, next_token[:, None]], 1))
            rows, columns = ((offsets <= accepted[:, None]) & active[:, None] & (positions < num_tokens)).nonzero(as_tuple=True)
            tokens[rows, positions[rows, columns]] = values[rows, columns]
            produced = active & (decided + accepted < num_tokens)
            decided = torch.where(active, decided + accepted + produced.long(), decided)
            for stream in self._streams():
                stream.replace(active, next_token, produced)
        if not self.speculative:
            self.flush()  # as plain decoding: every token fed before the next prefix, in a call of its own
        return tokens

    def _sample_plain(self, num_tokens: int) -> torch.LongTensor:
        """Plain decoding, one call per token: the prefix's call gives the first token's distribution, and every
        token is fed as it is drawn (the frame's last one too), exactly as `generate()` does."""
        streams = self._streams()
        fed = [stream.pending for stream in streams]  # the prefixes: nothing else waits in plain decoding
        tokens = []
        for _ in range(num_tokens + 1):
            logits = [self._feed(stream, ids) for stream, ids in zip(streams, fed)]
            if len(tokens) == num_tokens:
                break
            scores = self._process(self._guide(*logits))
            if self.do_sample:
                token = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1, generator=self.generator)[:, 0]
            else:
                token = scores.argmax(dim=-1)
            tokens.append(token)
            fed = [token[:, None]] * len(streams)
        for stream in streams:
            stream.pending_lengths = torch.zeros_like(stream.pending_lengths)
        return torch.stack(tokens, dim=1)

    def _feed(self, stream: _Stream, ids: torch.LongTensor) -> torch.FloatTensor:
        """One call of `ids` `[batch, n]`; the float32 logits of its last position."""
        output = self.model(ids, cache=stream.cache, use_cache=True, logits_to_keep=1, check_inputs=False)
        stream.cache = output.cache
        self.counts.model_calls += 1
        return output.logits[:, -1].to(dtype=torch.float32)

    def _guide(self, logits: torch.FloatTensor, unconditional: torch.FloatTensor | None = None) -> torch.FloatTensor:
        """With guidance, log p(x | uncond) + s · (log p(x | text) − log p(x | uncond)); else the logits."""
        if unconditional is None:
            return logits
        conditional, unconditional = logits.log_softmax(dim=-1), unconditional.log_softmax(dim=-1)
        return unconditional + self.guidance_scale * (conditional - unconditional)

    def _commit(self, accepted: torch.LongTensor, active: torch.BoolTensor) -> None:
        """Roll each stream back to its pending tokens plus the accepted window positions."""
        for stream in self._streams():
            kept = torch.where(active, stream.pending_lengths + accepted, 0)
            fed = stream.cache.records[-1].length
            if bool((kept != fed).any()):
                stream.cache.rewind(kept)

    def _count(self, is_draft, window_lengths, accepted, active, source: str) -> None:
        # Verified: the drafts up to and including the first refused one (those after it are never judged).
        offsets = torch.arange(is_draft.shape[1], device=is_draft.device)[None, :]
        verified = is_draft & (offsets <= accepted[:, None]) & (offsets < window_lengths[:, None]) & active[:, None]
        drafted = int(verified.sum())
        if drafted:
            accepted_drafts = int((verified & (offsets < accepted[:, None])).sum())
            self.counts.drafted += drafted
            self.counts.accepted += accepted_drafts
            tally = self.counts.drafts_by_source.setdefault(source, [0, 0])
            tally[0] += drafted
            tally[1] += accepted_drafts

    @torch.inference_mode()
    def flush(self) -> None:
        """Feed the tokens still waiting (each row's last decided token), so that the cache holds everything."""
        if self.stream is None or not bool((self.stream.pending_lengths > 0).any()):
            return
        empty = torch.zeros(self.stream.pending.shape[0], 0, dtype=torch.long, device=self.stream.pending.device)
        for stream in self._streams():
            lengths = stream.pending_lengths
            self._call(stream, empty, torch.zeros_like(lengths), 0, lengths > 0)
            if bool((lengths != stream.cache.records[-1].length).any()):
                stream.cache.rewind(lengths)
            stream.pending_lengths = torch.zeros_like(lengths)
