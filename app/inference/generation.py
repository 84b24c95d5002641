"""What every chat engine shares: the generation settings and the end-of-stream marker."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from app.core.errors import InvalidInput


@dataclass(frozen=True)
class GenSettings:
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 256
    system_prompt: str = ""
    # Sampling seed: the same seed, prompt and settings give the same answer again (a battle
    # or an eval can be replayed). None: fresh randomness each time.
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.temperature <= 2:
            raise InvalidInput("temperature must be between 0 and 2")
        if not 0 < self.top_p <= 1:
            raise InvalidInput("top_p must be in (0, 1]")
        if not 1 <= self.max_new_tokens <= 8192:
            raise InvalidInput("max new tokens must be between 1 and 8192")
        if self.seed is not None and not 0 <= self.seed < 2**32:
            raise InvalidInput("seed must be between 0 and 4294967295")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_seed(self, seed: int | None) -> GenSettings:
        return replace(self, seed=seed)

    def sampling_kwargs(self) -> dict[str, Any]:
        do_sample = self.temperature > 0
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": do_sample}
        if do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw


@dataclass(frozen=True)
class Finish:
    """Last item of every stream: why generation stopped."""

    reason: str  # stop | length | error
