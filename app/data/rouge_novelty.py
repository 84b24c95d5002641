"""ROUGE-L novelty filter that scales to tens of thousands of instructions.

Self-Instruct keeps a new instruction only when its ROUGE-L F1 against every kept
instruction is at most 0.7. Comparing each candidate with every kept one is
quadratic, so an index skips pairs that cannot reach the threshold:

* F1 = 2·LCS/(m+n) and LCS <= min(m, n), so lengths must be close
  (min/max > t/(2-t));
* LCS <= |multiset overlap|, so a similar pair shares at least r·len tokens and,
  by the prefix-filtering argument, shares a token among the first
  ``len - r·len + 1`` tokens of each side under one global order.
  The order is by document frequency (rare first), so prefixes hold the
  discriminating words and posting lists stay short. Any fixed order is exact;
  the index re-sorts everything whenever the kept set doubles, so the order
  follows the data at an amortised cost of about one extra insert per text.

Pairs that survive are scored exactly with rapidfuzz's bit-parallel LCS on token
ids. Tokenisation and the float formula follow ``rouge-score``'s defaults
(lowercase, split on non-alphanumerics, no stemming), so decisions match it.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from rapidfuzz.distance import LCSseq

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_EPS = 1e-9


def tokenize(text: str) -> list[str]:
    """rouge-score's default tokenizer (no stemmer)."""
    return [t for t in _NON_ALNUM.sub(" ", text.lower()).split() if t]


def rouge_l_f1_tokens(a: list[str] | str, b: list[str] | str, lcs: int | None = None) -> float:
    """ROUGE-L F1 computed as rouge-score does (same float formula)."""
    if not a or not b:
        return 0.0
    if lcs is None:
        lcs = int(LCSseq.similarity(a, b))
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(b), lcs / len(a)
    return 2 * precision * recall / (precision + recall)


def rouge_l_f1(a: str, b: str) -> float:
    return rouge_l_f1_tokens(tokenize(a), tokenize(b))


@dataclass
class NoveltyIndex:
    """Kept instructions, indexed so ``most_similar`` skips hopeless pairs."""

    threshold: float = 0.7
    texts: list[str] = field(default_factory=list)
    _codes: list[str] = field(default_factory=list)  # token ids as one char each
    _vocab: dict[str, int] = field(default_factory=dict)
    _tokens: list[list[str]] = field(default_factory=list)
    # (token, repeat) -> [(text index, its length, elements from this one to its end)]
    _postings: dict[tuple[str, int], list[tuple[int, int, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    _df: dict[str, int] = field(default_factory=dict)  # document frequencies at the last re-sort
    _next_resort: int = 64
    pairs_scored: int = 0

    @property
    def _ratio(self) -> float:
        return self.threshold / (2 - self.threshold)

    def _encode(self, tokens: list[str]) -> str:
        # Tokens become code points so rapidfuzz runs its fast string LCS on them.
        ids = [self._vocab.setdefault(t, len(self._vocab)) for t in tokens]
        return "".join(chr(0x100 + i) if i < 0xD700 else chr(0xE000 + i - 0xD700) for i in ids)

    def _prefix(self, tokens: list[str]) -> list[tuple[str, int]]:
        seen: dict[str, int] = defaultdict(int)
        elements = []
        for t in tokens:  # the k-th repeat of a token is its own element: multisets as sets
            elements.append((t, seen[t]))
            seen[t] += 1
        df = self._df
        elements.sort(key=lambda e: (df.get(e[0], 0), e[0], e[1]))
        need = max(1, math.floor(self._ratio * len(tokens) - _EPS))
        return elements[: len(tokens) - need + 1]

    def most_similar(self, text: str, first: bool = False) -> tuple[float, int] | None:
        """The best (F1, index) among kept texts with F1 > threshold, else None;
        ``first``: the first such text found (enough to reject a candidate)."""
        tokens = tokenize(text)
        if not tokens:
            return None
        code = self._encode(tokens)
        m = len(tokens)
        lo, hi = self._ratio * m - _EPS, m / self._ratio + _EPS
        # Smallest LCS that could give F1 > threshold, per partner length; rapidfuzz
        # stops early below it.
        cutoffs = {n: max(1, math.floor(self.threshold / 2 * (m + n) - _EPS))
                   for n in range(math.ceil(lo), math.floor(hi) + 1)}
        seen: set[int] = set()
        best: tuple[float, int] | None = None
        for i, element in enumerate(self._prefix(tokens)):
            left = m - i  # this element and the ones after it
            for idx, n, rest in self._postings.get(element, ()):
                cutoff = cutoffs.get(n)
                # Length filter, then the positional one: at the first shared element
                # under the global order nothing earlier is shared, so the overlap (a
                # bound on the LCS) is at most what is left after it on either side.
                # A text pruned here is hopeless; one seen again later is only re-scored.
                if cutoff is None or min(left, rest) < cutoff or idx in seen:
                    continue
                seen.add(idx)
                other = self._codes[idx]
                self.pairs_scored += 1
                lcs = int(LCSseq.similarity(code, other, score_cutoff=cutoff))
                if not lcs:
                    continue
                f1 = rouge_l_f1_tokens(code, other, lcs)
                if f1 > self.threshold and (best is None or f1 > best[0]):
                    best = (f1, idx)
                    if first:
                        return best
        return best

    def add(self, text: str) -> int:
        tokens = tokenize(text)
        idx = len(self.texts)
        self.texts.append(text)
        self._codes.append(self._encode(tokens))
        self._tokens.append(tokens)
        if len(self.texts) >= self._next_resort:
            self._resort()
        elif tokens:
            self._index(idx)
        return idx

    def _index(self, idx: int) -> None:
        n = len(self._tokens[idx])
        for pos, element in enumerate(self._prefix(self._tokens[idx])):
            self._postings[element].append((idx, n, n - pos))

    def _resort(self) -> None:
        df: dict[str, int] = defaultdict(int)
        for tokens in self._tokens:
            for t in set(tokens):
                df[t] += 1
        self._df = dict(df)
        self._postings = defaultdict(list)
        for idx, tokens in enumerate(self._tokens):
            if tokens:
                self._index(idx)
        self._next_resort = 2 * len(self.texts)

    def add_if_novel(self, text: str) -> tuple[bool, tuple[float, int] | None]:
        """Keep ``text`` unless too similar to a kept one; says which one if so."""
        hit = self.most_similar(text, first=True)
        if hit is None:
            self.add(text)
            return True, None
        return False, hit
