import pytest

from marco_contract.scoring import EditCounts
from marco_trainer.text import corpus_rates, normalize, score_pair


def test_english_normaliser_ignores_case_punctuation_and_spelling():
    scored = score_pair("Hello, World! The colour is grey.", "hello world the color is gray", "en")
    assert scored.words.errors == 0 and scored.words.reference_words == 6


def test_word_errors_are_counted_by_kind():
    scored = score_pair("call me back soon", "fall me back soon please", "en")
    assert (scored.words.substitutions, scored.words.insertions, scored.words.deletions) == (
        1,
        1,
        0,
    )
    assert scored.words.rate == pytest.approx(50.0)


def test_chinese_is_scored_per_character():
    scored = score_pair("今天天气很好。", "今天天气不好", "zh")
    assert scored.words.reference_words == 6  # characters, punctuation removed
    assert scored.words.errors == 1
    wer, cer = corpus_rates([scored])
    assert wer == cer == pytest.approx(100 / 6)


def test_corpus_rate_sums_edits_not_averages_of_rates():
    a = score_pair("a b c d e f g h i j", "a b c d e f g h i j", "en")
    b = score_pair("x", "y", "en")
    wer, _ = corpus_rates([a, b])
    assert wer == pytest.approx(100 / 11)


def test_empty_references_and_hypotheses():
    assert score_pair("", "", "en").words.rate == 0.0
    assert score_pair("", "noise", "en").words.rate == 100.0
    assert score_pair("two words", "", "en").words == EditCounts(deletions=2, reference_words=2)


def test_other_languages_use_the_basic_normaliser():
    assert normalize("Bonjour, le Monde !", "fr") == "bonjour le monde"
