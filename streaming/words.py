"""The vocabulary the stream draws from, with profanity removed."""

import logging
import random
from collections.abc import Iterable
from pathlib import Path

from wonderwords import Defaults
from wonderwords.random_word import _DEFAULT_CATEGORIES

from .exceptions import WordListError

logger = logging.getLogger(__name__)

BUILT_IN_LISTS = (Defaults.NOUNS, Defaults.VERBS, Defaults.ADJECTIVES)
# wonderwords' own profanity list, lowercased as its is_profanity() compares.
PROFANITIES = frozenset(
    word.lower().strip() for word in _DEFAULT_CATEGORIES[Defaults.PROFANITIES]
)


def is_streamable(word: str) -> bool:
    """Return True for a single clean word: no spaces and not on the profanity list.

    Each part of a hyphenated word is checked as well as the whole.
    """
    if not word or any(char.isspace() for char in word):
        return False
    parts = [word, *word.split("-")]
    return not any(part.lower() in PROFANITIES for part in parts)


def clean_vocabulary(words: Iterable[str]) -> list[str]:
    """Return the distinct streamable words, in their first order."""
    return [word for word in dict.fromkeys(words) if is_streamable(word)]


def built_in_words() -> list[str]:
    """Return wonderwords' nouns, verbs and adjectives."""
    words: list[str] = []
    for category in BUILT_IN_LISTS:
        words.extend(_DEFAULT_CATEGORIES[category])
    return words


def read_word_list(path: str | Path) -> list[str]:
    """Read one word per line, skipping blank lines and lines starting with '#'."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WordListError(f"WORD_LIST {str(path)!r} cannot be read: {exc}") from exc
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


class Vocabulary:
    """Draws random words from a vocabulary cleaned once, at construction.

    Cleaning wonderwords' 8,700 words takes tens of milliseconds, so one
    WordSource serves every tick. Drawing is a plain random.choice:
    RandomWord.word() filters its lists again on each call (about 1.4 ms).
    """

    def __init__(self, words: Iterable[str], rng: random.Random | None = None) -> None:
        self.vocabulary = clean_vocabulary(words)
        if not self.vocabulary:
            raise WordListError("the word list contains no streamable word")
        self.size = len(self.vocabulary)
        self._rng = rng or random.Random()

    @classmethod
    def from_settings(cls, word_list: str) -> "Vocabulary":
        """Build the source from WORD_LIST, or from wonderwords' lists when empty."""
        if word_list:
            source = cls(read_word_list(word_list))
            logger.info("word list %s: %d words", word_list, source.size)
            return source
        return cls(built_in_words())

    def draw(self) -> str:
        """Return one random word."""
        return self._rng.choice(self.vocabulary)
