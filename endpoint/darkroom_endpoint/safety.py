"""The operator's prompt blocklist: a request whose prompt or negative prompt contains a listed term is refused
with :class:`ContentPolicyViolation` before any model runs.

The file (``Settings.blocklist``) holds one term or phrase per line; blank lines and lines starting with ``#``
are ignored. Matching is case-insensitive and whole-word: ``gore`` matches "Gore" and "some gore." but not
"gorensen"; a phrase matches across any run of whitespace ("blood  bath" for ``blood bath``). The refusal
never says which term matched, so the list cannot be probed term by term.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from darkroom_endpoint.contract import ContentPolicyViolation


class PromptBlocklist:
    """Whole-word, case-insensitive terms; :meth:`check` raises on a match."""

    def __init__(self, terms: Iterable[str] = ()) -> None:
        self.terms = tuple(term.strip() for term in terms if term.strip())
        alternatives = [r"\s+".join(re.escape(word) for word in term.split()) for term in self.terms]
        # (?<!\w)/(?!\w) rather than \b: a term that starts or ends in punctuation ("c++") still needs a word edge
        # outside it, and \b would demand one between two non-word characters.
        self._pattern = (
            re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)", re.IGNORECASE) if alternatives else None
        )

    @classmethod
    def from_file(cls, path: Path | None) -> PromptBlocklist:
        """Read the operator's file; ``None`` gives an empty list. A missing file is an error, not an empty list:
        an operator who named a blocklist expects it to be enforced."""
        if path is None:
            return cls()
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls(line for line in lines if not line.strip().startswith("#"))

    def __len__(self) -> int:
        return len(self.terms)

    def matches(self, text: str | None) -> bool:
        """Whether ``text`` contains any listed term as whole words."""
        return bool(text) and self._pattern is not None and self._pattern.search(text) is not None

    def check(self, *texts: str | None) -> None:
        """Raise :class:`ContentPolicyViolation` if any of ``texts`` matches."""
        if any(self.matches(text) for text in texts):
            raise ContentPolicyViolation()
