"""The words of a question that keyword search looks for."""

from __future__ import annotations

from adapters.memory.kb_words import MAX_QUERY_WORDS, affordable, query_words


def test_common_words_and_single_letters_are_not_searched_but_numbers_are() -> None:
    assert query_words("What does E-4711 mean?") == ["4711", "mean"]
    assert query_words("Is the router's light on in room 5?") == ["router", "light", "room", "5"]


def test_a_question_of_common_words_only_has_no_keywords() -> None:
    assert query_words("What is it? Is it that which was there?") == []
    assert query_words("?!") == []


def test_words_are_distinct_lower_case_and_capped() -> None:
    many = " ".join(f"word{i}" for i in range(MAX_QUERY_WORDS + 5))
    assert query_words("Reboot the ROUTER, reboot it") == ["reboot", "router"]
    assert query_words(many) == [f"word{i}" for i in range(MAX_QUERY_WORDS)]


def test_words_are_letter_and_digit_runs_only() -> None:
    assert query_words('fuse" OR x:* NEAR(a b) && émigré_ñ') == ["fuse", "near", "émigré"]


def test_the_commonest_words_are_left_out_when_ranking_them_would_be_slow() -> None:
    words = ["object", "considered", "true", "xyzzy"]
    matches = {"object": 67_000, "considered": 5_500, "true": 19_000}
    assert affordable(words, matches, budget=10_000) == ["considered", "xyzzy"]
    assert affordable(words, matches, budget=100_000) == ["object", "considered", "true", "xyzzy"]
    assert affordable(["object"], matches, budget=10_000) == []
