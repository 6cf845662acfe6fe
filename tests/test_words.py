import random

import pytest
from wonderwords import Defaults
from wonderwords.random_word import _DEFAULT_CATEGORIES

from streaming.exceptions import WordListError
from streaming.words import (
    PROFANITIES,
    Vocabulary,
    built_in_words,
    is_streamable,
    read_word_list,
)


def test_profanity_list_is_loaded():
    assert len(PROFANITIES) == len(
        {w.lower().strip() for w in _DEFAULT_CATEGORIES[Defaults.PROFANITIES]}
    )
    assert len(PROFANITIES) > 500


def test_built_in_lists_contain_profanity():
    # The filter is needed: wonderwords' own lists hold words of its profanity list.
    assert any(word.lower() in PROFANITIES for word in built_in_words())


def test_built_in_vocabulary_has_no_profanity():
    vocabulary = Vocabulary(built_in_words()).vocabulary
    assert len(vocabulary) > 7000
    assert not [word for word in vocabulary if word.lower() in PROFANITIES]


def test_profane_words_are_never_drawn():
    profane = sorted(PROFANITIES)[:200]
    vocabulary = Vocabulary([*profane, "harbour", "lantern"], rng=random.Random(1))
    drawn = {vocabulary.draw() for _ in range(2000)}
    assert drawn == {"harbour", "lantern"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("lantern", True),
        ("well-known", True),
        ("ice cream", False),
        ("", False),
        ("tab\tword", False),
    ],
)
def test_is_streamable(word, expected):
    assert is_streamable(word) is expected


def test_hyphenated_profanity_is_rejected():
    profane = sorted(PROFANITIES)[0]
    assert not is_streamable(f"super-{profane}")
    assert not is_streamable(profane.upper())


def test_vocabulary_of_only_profanity_is_rejected():
    with pytest.raises(WordListError, match="no streamable word"):
        Vocabulary(sorted(PROFANITIES)[:5])


def test_read_word_list_skips_comments_and_blanks(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# my words\nalpha\n\n  beta  \n#gamma\n", encoding="utf-8")
    assert read_word_list(path) == ["alpha", "beta"]


def test_read_word_list_missing_file(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(WordListError, match="cannot be read"):
        read_word_list(missing)


def test_read_word_list_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9\n")
    with pytest.raises(WordListError, match="cannot be read"):
        read_word_list(path)


def test_from_settings_uses_word_list(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("alpha\nalpha\nbeta\n", encoding="utf-8")
    vocabulary = Vocabulary.from_settings(str(path))
    assert vocabulary.vocabulary == ["alpha", "beta"]
