"""Sampling image-code frames from a FlashVideo model through its RetNetCache, speculatively or plainly.

Text and serial-number tokens are fed, never sampled; image codes are sampled with logits restricted to the
image-code range. Tokens known in advance (a given first frame, the key frames of an interpolation pair, inherited
tokens of redundant-free interpolation) are fed, never sampled, in the same calls as what surrounds them.

Speculative decoding (on by default in the pipeline) drafts each code from a frame already known and verifies the
drafts in one call (`speculative.py`): the clips follow the model's distribution exactly, and greedy clips are greedy
decoding's. Plain decoding makes one call per sampled token and applies the same processors, in the same order, as
`model.generate()`, so both give the same tokens for the same seed.

With classifier-free guidance a second, unconditional stream (its own prefix, e.g. without the text, then the same
image codes) runs beside the conditional one, and tokens are sampled from
`log p(x | uncond) + guidance_scale * (log p(x | text) - log p(x | uncond))`, as transformers'
`UnbatchedClassifierFreeGuidanceLogitsProcessor` computes it.
"""

from dataclasses import dataclass, field

import torch
from transformers.generation import (
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .draft_table import CodeDraftTable
from .modeling_flashvideo import FlashVideoForCausalLM, RetNetCache
from .speculative import verify_drafts
from .validation import check_int


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
CODE_TABLE = "code_table"
LOOK_AHEAD = "look_ahead"  # drafts from a verify call's outputs after the draft it refused (`FrameSampler`)
FIXED, DRAFTED, LOOKED_AHEAD = 0, 1, 2  # what a window position holds: a fixed token, a draft from the draft source,
# a draft from the last call's look-ahead


def add_drafts(tallies: dict[str, list[int]], source: str, drafted: int, accepted: int) -> None:
    """Add drafts verified and accepted to a `{draft source: [drafted, accepted]}` tally."""
    tally = tallies.setdefault(source, [0, 0])
    tally[0] += drafted
    tally[1] += accepted


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
    """One sequence of calls through the model: its `RetNetCache` and, per row, the tokens decided but not yet fed.

    The per-row bookkeeping of speculative decoding (what waits, where each row stands, its window) is a few small
    integers per row and call, so it lives in Python lists: a handful of tensor operations per call instead of a
    hundred (they cost more than the arithmetic on a CPU). Tensors are built once per call, for the model and for
    the acceptance rule.
    """

    def __init__(self, batch: int):
        self.cache: RetNetCache | None = None
        self.pending: list[list[int]] = [[] for _ in range(batch)]


class FrameSampler:
    """Samples frames of image codes for a batch of sequences that share a `RetNetCache`, speculatively or not.

    Tokens known in advance (a prefix `[text][SN_i]`, a given frame, inherited tokens) are fed, never sampled. With
    `num_draft_tokens=k > 0`, every call also carries up to k drafts — the code at the same grid cell of a reference
    frame already known, or of the row above inside the frame — which the call's outputs verify (`speculative.py`:
    exactly the model's distribution; greedy: exactly greedy decoding). The first token not accepted is drawn from
    the model and fed as the first token of the next call; the cache is rolled back to the accepted prefix
    (`RetNetCache.rewind`), per row, so rows advance by their own amounts (`lockstep=True`: all by the least). Fixed
    tokens ride in the same calls, always accepted, so a drawn token and the run of fixed tokens after it cost one
    call (redundant-free interpolation). After a refused draft, the positions the call judged beyond it are drafted
    next with the argmax of the call's own distributions there (`look_ahead_start`; the "look_ahead" draft source).
    With `k = 0` and nothing fixed this is plain decoding, one call per token,
    with the same tokens as `model.generate()` for the same seed.

    Example:

    ```python
    >>> processor = build_logits_processor(model.config.image_token_range, top_k=100)
    >>> sampler = FrameSampler(model, processor, num_draft_tokens=4)
    >>> first = sampler.sample_frame(prefix_ids, model.config.tokens_per_frame)  # drafts from the row above
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
        draft_table: CodeDraftTable | None = None,
        look_ahead_start: int | None = 0,
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
        # Drafts looked up from the codes around each cell (`draft_table.py`) before falling back to the reference
        # cell or the row above; None: those alone.
        self.draft_table = draft_table
        # A verify call that refuses the draft at some window position has still computed the model's distributions
        # for the positions after it (given the refused draft instead of the token drawn there). Their argmax drafts
        # those positions in the next call, from the `look_ahead_start`-th position after the drawn token on (None:
        # never): the model's own guess, with the whole frame in view, which a table of three neighbouring codes
        # cannot match. Right after the drawn token the table, which sees that token, can be the better guess (it is
        # for the shipped key-frame model). Any draft keeps the sampled distribution exact.
        check_int("look_ahead_start", look_ahead_start, 0, optional=True)
        self.look_ahead_start = look_ahead_start
        self.image_range = model.config.image_token_range  # read once: a config attribute costs a few µs per call
        self.image_start = self.image_range[0]  # ids minus this are codes (the draft table's and the scores' index)
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
            self.stream, self.unconditional_stream = _Stream(batch), _Stream(batch)

    def _call(
        self, stream: _Stream, windows: list[list[int]], width: int, active: list[bool]
    ) -> torch.FloatTensor:
        """Feed each active row's pending tokens then its window in one call (the other rows are fed a pad and rolled
        back); returns the float32 logits `[batch, width + 1, image codes]` of the positions that predict window
        positions 0 … width (the last pending token's and the window's)."""
        start, end = self.image_range
        rows = [pending + window if on else [] for pending, window, on in zip(stream.pending, windows, active)]
        length = max(max(len(row) for row in rows), 1 + width if self.static_windows else 1)
        ids = torch.tensor([row + [0] * (length - len(row)) for row in rows], device=self.model.device)
        # Logits only for the positions read below: from the earliest last-pending-token on.
        first_read = min(len(pending) for pending, on in zip(stream.pending, active) if on) - 1
        logits = self._decode(stream, ids, length - first_read, (start, end))
        if logits.shape[-1] != end - start:  # modelling code from before `logits_vocab_range` (remote code) ignores it
            logits = logits[..., start:end]
        kept = logits.shape[1]
        read = torch.tensor(
            [[min(max(len(pending) - 1 - first_read, 0) + i, kept - 1) for i in range(width + 1)]
             for pending in stream.pending], device=ids.device,
        )  # fmt: skip
        return logits.gather(1, read[..., None].expand(-1, -1, logits.shape[-1])).to(dtype=torch.float32)

    def _process(self, logits: torch.FloatTensor, image_codes_only: bool = False) -> torch.FloatTensor:
        """The processors applied to logits `[..., vocab]`; `image_codes_only`: the logits are already sliced to the
        image codes, so the image-code restriction is skipped."""
        # Each processor called directly: LogitsProcessorList.__call__ inspects every processor's signature on
        # every call (35–80 µs per token on this project's CPU). Same processors, same order, same scores.
        shape = logits.shape
        scores = logits.reshape(-1, shape[-1])
        for processor in self.logits_processor:
            if not (image_codes_only and isinstance(processor, ImageCodesOnlyLogitsProcessor)):
                scores = processor(None, scores)
        return scores.reshape(shape)

    def _window(
        self, tokens: list[int], decided: int, fixed_ids: list[int] | None, fixed_mask: list[bool] | None,
        reference: list[int] | None, reference_gap: int | None = None, looked_ahead: dict[int, int] | None = None,
    ) -> tuple[list[int], list[int]]:  # fmt: skip
        """One row's window from its first undecided position: `(tokens, kinds)`, each position's kind `FIXED`,
        `DRAFTED` or `LOOKED_AHEAD` (a draft taken from `looked_ahead`, position → token).

        A window holds every fixed position and up to `num_draft_tokens` drafts (static windows: at most that many
        positions in all); without drafts, the run of fixed positions only. Drafts: the draft table's code for the
        cell's neighbours (above, left, and `reference` at the same cell, `reference_gap` frames back), where there
        is a table and it knows them; else `reference` at the same cell, or (None) the row above — the last decided
        token in the frame's first row, none for the frame's first token. `looked_ahead` overrides them where it has
        the position.
        """
        window, kinds, drafts = [], [], 0
        for position in range(decided, len(tokens)):
            if fixed_mask is not None and fixed_mask[position]:
                window.append(fixed_ids[position])
                kinds.append(FIXED)
            else:
                if drafts == self.num_draft_tokens:
                    break
                draft = looked_ahead.get(position) if looked_ahead else None
                if draft is not None:
                    kinds.append(LOOKED_AHEAD)
                else:
                    draft = self._draft(tokens, decided, window, position, reference, reference_gap)
                    if draft is None:
                        break
                    kinds.append(DRAFTED)
                window.append(draft)
                drafts += 1
            if self.static_windows and len(window) == self.num_draft_tokens:
                break
        return window, kinds

    def _draft(
        self, tokens: list[int], decided: int, window: list[int], position: int, reference: list[int] | None,
        reference_gap: int | None,
    ) -> int | None:  # fmt: skip
        """The draft for `position` (see `_window`), from what is decided or already in this window; None for a
        frame's first token without a reference."""
        grid = self.grid
        # The cells above and to the left: decided, or drafted earlier in this window (called once per draft, so
        # plain indexing rather than a helper).
        above = position - grid
        if self.draft_table is not None and above >= 0 and position % grid:
            start = self.image_start
            left = position - 1
            code = self.draft_table.draft(
                None if reference is None else reference[position] - start,
                (tokens[above] if above < decided else window[above - decided]) - start,
                (tokens[left] if left < decided else window[left - decided]) - start, reference_gap,
            )  # fmt: skip
            if code is not None:
                return code + start
        if reference is not None:
            return reference[position]
        if above >= 0:  # the row above
            return tokens[above] if above < decided else window[above - decided]
        return tokens[decided - 1] if decided > 0 else None

    def _distributions(self, windows: list[list[int]], width: int, active: list[bool]) -> torch.Tensor:
        """One call per stream; the processed scores `[batch, width + 1, image codes]` of window positions 0 … width,
        over the image codes only (index c is token `image_token_range[0] + c`).

        Slicing the logits to the image codes is the image-code restriction, done before the other processors rather
        than by them: the scores differ by a constant per row at most (guidance's log-softmax normalises over fewer
        tokens), which temperature, top-k, top-p and the softmax all ignore, so the distributions are the same.
        """
        logits = [self._call(stream, windows, width, active) for stream in self._streams()]
        return self._process(self._guide(*logits), image_codes_only=True)

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
        reference_gap: int | None = None,
    ) -> torch.LongTensor:
        """Feed `prefix` `[batch, P]` (e.g. `[text][SN_i]`; with guidance the unconditional stream is fed
        `unconditional_prefix`), then decide a frame of `num_tokens` image tokens. Returns the ids
        `[batch, num_tokens]`.

        Where `fixed_mask` `[batch, num_tokens]` is True the token is `fixed_ids`'s, fed and never sampled. Drafts come
        from `reference` `[batch, num_tokens]` (a frame already known; counted under `draft_source`) or, when None,
        from the row above, through the sampler's draft table where it has one (`reference_gap`: frames between
        `reference` and this frame, for the table). The frame's last decided token may still be waiting to be fed:
        it rides in the next call.
        """
        batch, device = prefix.shape[0], self.model.device
        self._start(batch)
        unconditional_prefix = prefix if unconditional_prefix is None else unconditional_prefix
        for stream, ids in zip(self._streams(), (prefix, unconditional_prefix)):
            for pending, row in zip(stream.pending, ids.tolist()):
                pending += row
        num_fixed = 0 if fixed_mask is None else int(fixed_mask.sum())
        self.counts.inherited += num_fixed
        self.counts.sampled += batch * num_tokens - num_fixed
        if not self.speculative and not num_fixed:
            return self._sample_plain(num_tokens)
        fixed_masks = [None] * batch if fixed_mask is None else fixed_mask.tolist()
        fixed_rows = [None] * batch if fixed_ids is None else fixed_ids.tolist()
        references = [None] * batch if reference is None else reference.tolist()
        source = draft_source or (ROW_ABOVE if reference is None else "reference")
        if self.draft_table is not None:
            source = f"{CODE_TABLE}+{source}"
        image_start = self.image_start
        tokens = [[0] * num_tokens for _ in range(batch)]
        decided = [0] * batch
        nothing_ahead: list[dict[int, int]] = [{}] * batch  # shared and never written: no row has look-ahead drafts
        looked_ahead = nothing_ahead  # per row: position -> token (`look_ahead_start`)
        while any(done < num_tokens for done in decided):
            active = [done < num_tokens for done in decided]
            windows, kinds = zip(*(
                self._window(row, done, ids, mask, ref, reference_gap, ahead) if on else ([], [])
                for row, done, ids, mask, ref, on, ahead in zip(
                    tokens, decided, fixed_rows, fixed_masks, references, active, looked_ahead
                )
            ))  # fmt: skip
            width = self.num_draft_tokens if self.static_windows else max(len(window) for window in windows)
            scores = self._distributions(windows, width, active)
            # Windows in code indices, padded (a fixed token outside the image codes is never judged).
            last_code = scores.shape[-1] - 1
            codes = torch.tensor(
                [[min(max(t - image_start, 0), last_code) for t in w] + [0] * (width - len(w)) for w in windows],
                dtype=torch.long, device=device,
            ).view(batch, width)  # fmt: skip
            is_draft = torch.tensor(
                [[kind != FIXED for kind in k] + [False] * (width - len(k)) for k in kinds], dtype=torch.bool,
                device=device,
            ).view(batch, width)  # fmt: skip
            lengths = torch.tensor([len(w) for w in windows], device=device)
            accepted, drawn = verify_drafts(scores, codes, is_draft, lengths, self.do_sample, self.generator)
            accepted, drawn = accepted.tolist(), [t + image_start for t in drawn.tolist()]
            # Rows that refused a draft: the call's argmax at window positions accepted + 1 + look_ahead_start …
            # len(window) (scores hold one more than the window) drafts those positions next. Read before lockstep
            # moves `accepted`: the scores beyond a row's own refusal are what the call was given.
            looked_ahead = nothing_ahead
            if self.look_ahead_start is not None:
                refused = [on and a < len(w) for a, w, on in zip(accepted, windows, active)]
                if any(refused):
                    best, skip = scores.argmax(dim=-1).tolist(), self.look_ahead_start
                    looked_ahead = [
                        {decided[b] + i: best[b][i] + image_start for i in range(a + 1 + skip, len(w) + 1)}
                        if refused[b] else {}
                        for b, (a, w) in enumerate(zip(accepted, windows))
                    ]  # fmt: skip
            if self.lockstep:
                # Every row advances by the least accepted; a row that accepted more takes its own accepted token
                # there, a valid draw (where to cut depends only on tokens already decided, a stopping time).
                least = min(a for a, on in zip(accepted, active) if on)
                drawn = [w[least] if a > least else t for w, a, t in zip(windows, accepted, drawn)]
                accepted = [least] * batch
            self._commit([a if on else 0 for a, on in zip(accepted, active)], active)
            for b in range(batch):
                if not active[b]:
                    continue
                # Drafts judged (up to and including the first refused one) and accepted, per source.
                judged, taken = kinds[b][: accepted[b] + 1], kinds[b][: accepted[b]]
                self._count(source, judged.count(DRAFTED), taken.count(DRAFTED))
                self._count(LOOK_AHEAD, judged.count(LOOKED_AHEAD), taken.count(LOOKED_AHEAD))
                start, kept = decided[b], accepted[b]
                tokens[b][start : start + kept] = windows[b][:kept]
                produced = start + kept < num_tokens
                if produced:
                    tokens[b][start + kept] = drawn[b]
                decided[b] = start + kept + produced
                for stream in self._streams():
                    stream.pending[b] = [drawn[b]] if produced else []
        if not self.speculative:
            self.flush()  # as plain decoding: every token fed before the next prefix, in a call of its own
        return torch.tensor(tokens, device=device)

    def _sample_plain(self, num_tokens: int) -> torch.LongTensor:
        """Plain decoding, one call per token: the prefix's call gives the first token's distribution, and every
        token is fed as it is drawn (the frame's last one too), exactly as `generate()` does."""
        streams = self._streams()
        # The prefixes: in plain decoding nothing else waits, so every row's is as long.
        fed = [torch.tensor(stream.pending, device=self.model.device) for stream in streams]
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
            stream.pending = [[] for _ in stream.pending]
        return torch.stack(tokens, dim=1)

    def _feed(self, stream: _Stream, ids: torch.LongTensor) -> torch.FloatTensor:
        """One call of `ids` `[batch, n]`; the float32 logits of its last position."""
        return self._decode(stream, ids, 1, None)[:, -1].to(dtype=torch.float32)

    def _decode(
        self, stream: _Stream, ids: torch.LongTensor, logits_to_keep: int, vocab_range: tuple[int, int] | None
    ) -> torch.FloatTensor:
        """One model call from the stream's cache (made by the model's first call): the logits of the last
        `logits_to_keep` positions. Through `model.decode` (no output objects, no range check of the ids: they are
        the processor's prefixes and sampled codes), or the model's forward for the first call and for modelling code
        from before `decode` (a checkpoint's own remote code)."""
        self.counts.model_calls += 1
        if stream.cache is not None and hasattr(self.model, "decode"):
            return self.model.decode(ids, stream.cache, logits_to_keep=logits_to_keep, logits_vocab_range=vocab_range)
        output = self.model(
            ids, cache=stream.cache, use_cache=True, logits_to_keep=logits_to_keep, logits_vocab_range=vocab_range,
            check_inputs=False,
        )  # fmt: skip
        stream.cache = output.cache
        if isinstance(stream.cache, RetNetCache):
            # The sampler only rewinds into its last call; older records would keep every call's states and keys
            # alive, and the memory they churn cost 3% of a clip (0.968 / 0.972 of the time, two sets of 16 and 24
            # prompts, same codes).
            stream.cache.max_rollback_tokens = 0
        return output.logits

    def _guide(self, logits: torch.FloatTensor, unconditional: torch.FloatTensor | None = None) -> torch.FloatTensor:
        """With guidance, log p(x | uncond) + s · (log p(x | text) − log p(x | uncond)); else the logits."""
        if unconditional is None:
            return logits
        conditional, unconditional = logits.log_softmax(dim=-1), unconditional.log_softmax(dim=-1)
        return unconditional + self.guidance_scale * (conditional - unconditional)

    def _commit(self, accepted: list[int], active: list[bool]) -> None:
        """Roll each stream back to its pending tokens plus the accepted window positions (inactive rows: nothing)."""
        for stream in self._streams():
            kept = [len(pending) + a if on else 0 for pending, a, on in zip(stream.pending, accepted, active)]
            if any(n != stream.cache.records[-1].length for n in kept):
                stream.cache.rewind(_counts_for(stream.cache, kept))

    def _count(self, source: str, verified: int, accepted: int) -> None:
        """Drafts verified (up to and including the first refused one: those after it are never judged) and accepted."""
        if verified:
            self.counts.drafted += verified
            self.counts.accepted += accepted
            add_drafts(self.counts.drafts_by_source, source, verified, accepted)

    @torch.inference_mode()
    def flush(self) -> None:
        """Feed the tokens still waiting (each row's last decided token), so that the cache holds everything."""
        if self.stream is None or not any(self.stream.pending):
            return
        for stream in self._streams():
            lengths = [len(pending) for pending in stream.pending]
            active = [n > 0 for n in lengths]
            self._call(stream, [[] for _ in lengths], 0, active)
            if any(n != stream.cache.records[-1].length for n in lengths):
                stream.cache.rewind(_counts_for(stream.cache, lengths))
            stream.pending = [[] for _ in lengths]


def _counts_for(cache: RetNetCache, counts: list[int]) -> list[int] | torch.Tensor:
    """Per-row counts for `cache.rewind`: a list for this package's RetNetCache (checked on the host, no tensor),
    a tensor for a cache from a checkpoint's own (older) modelling code, which takes only that."""
    return counts if isinstance(cache, RetNetCache) else torch.tensor(counts)
