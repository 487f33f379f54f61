"""The built-in caption tokenizer: a word-level 🤗 `tokenizers` model built from a data set's captions."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.utils import logging


logger = logging.get_logger(__name__)

UNK_TOKEN = "[UNK]"


def _empty_word_level_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    # Captions are short and their casing carries no meaning; NFKC folds look-alike characters together.
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    # Split on whitespace, then make every punctuation character its own token ("left," -> "left", ",").
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    return tokenizer


def build_text_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """
    Build a word-level caption tokenizer from `texts`.

    Words are lower-cased and split on whitespace and punctuation. Id 0 is `[UNK]`; the other ids go to the
    `vocab_size - 1` most frequent words, ties broken alphabetically so that the same texts always give the
    same ids. Words outside the vocabulary encode to `[UNK]`, never to an error.

    The ids are local to the tokenizer (`0 … len(tokenizer) - 1`); [`FlashVideoProcessor`] moves them into the
    model vocabulary by adding `config.text_token_start`.

    Args:
        texts: the captions to learn the vocabulary from (any iterable; read once).
        vocab_size: the most tokens the tokenizer may have, `[UNK]` included (at least 2).

    Example:

    ```python
    >>> from flashvideo.text_tokenizer import build_text_tokenizer
    >>> captions = ["a red circle moving left", "a blue square moving up"]
    >>> tokenizer = build_text_tokenizer(captions, vocab_size=64)
    >>> tokenizer.convert_ids_to_tokens(tokenizer.encode("A red zebra", add_special_tokens=False))
    ['a', 'red', '[UNK]']
    ```
    """
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or vocab_size < 2:
        raise ValueError(
            f"vocab_size must be an integer >= 2 ([UNK] plus at least one word), got {vocab_size!r}."
        )
    splitter = _empty_word_level_tokenizer({UNK_TOKEN: 0})
    counts: Counter[str] = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must yield strings, got {type(text).__name__}.")
        normalized = splitter.normalizer.normalize_str(text)
        counts.update(word for word, _ in splitter.pre_tokenizer.pre_tokenize_str(normalized))
    if not counts:
        raise ValueError("texts must contain at least one word to build a vocabulary from.")
    # Sorting by (-count, word) rather than relying on the trainer keeps ids identical across runs and
    # machines.
    words = sorted(counts, key=lambda word: (-counts[word], word))
    kept = words[: vocab_size - 1]
    if len(kept) < len(words):
        logger.warning(
            f"build_text_tokenizer: {len(words) - len(kept)} of {len(words)} distinct words do not fit in "
            f"vocab_size={vocab_size} and will encode to {UNK_TOKEN}."
        )
    vocab = {UNK_TOKEN: 0, **{word: index + 1 for index, word in enumerate(kept)}}
    return PreTrainedTokenizerFast(tokenizer_object=_empty_word_level_tokenizer(vocab), unk_token=UNK_TOKEN)


__all__ = ["UNK_TOKEN", "build_text_tokenizer"]
