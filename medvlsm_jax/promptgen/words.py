"""Cardinal numbers as English words, in the style of ``num2words`` (which the paper used).

``number_to_words(73) == "seventy-three"``, ``number_to_words(105) == "one hundred and five"``.
Only 0..999 is needed (component counts and patient ages)."""

from __future__ import annotations

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")


def number_to_words(n: int) -> str:
    """English words for ``0 <= n <= 999`` (hyphenated tens, British "and" after hundreds)."""
    if not 0 <= n <= 999:
        raise ValueError(f"number_to_words supports 0..999, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{_ONES[hundreds]} hundred" + (f" and {number_to_words(rest)}" if rest else "")


_WORDS_TO_NUMBER = {number_to_words(i): i for i in range(1000)}


def words_to_number(text: str) -> int:
    """Inverse of :func:`number_to_words` (case-insensitive); ``ValueError`` if not a number."""
    try:
        return _WORDS_TO_NUMBER[text.lower()]
    except KeyError:
        raise ValueError(f"not an English cardinal number in 0..999: {text!r}") from None
