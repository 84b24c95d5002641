"""What the machine can train with: GPUs (via nvidia-smi, no torch import) and
whether bitsandbytes is installed. Decides precision and refuses impossible runs."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from dataclasses import dataclass, field

QUERY = "index,name,memory.total,memory.used,compute_cap"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_mib: int
    memory_used_mib: int
    compute_capability: float

    @property
    def label(self) -> str:
        return (f"GPU {self.index}: {self.name} · {self.memory_used_mib / 1024:.1f}/"
                f"{self.memory_total_mib / 1024:.1f} GiB")


@dataclass(frozen=True)
class Hardware:
    gpus: tuple[Gpu, ...] = ()
    has_bitsandbytes: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return bool(self.gpus)

    def select(self, indexes: list[int] | None) -> tuple[Gpu, ...]:
        """The chosen GPUs; none chosen means all of them (CPU when there are none)."""
        if not indexes:
            return self.gpus
        known = {g.index: g for g in self.gpus}
        missing = [i for i in indexes if i not in known]
        if missing:
            have = ", ".join(str(i) for i in known) or "none"
            raise ValueError(f"no GPU with index {missing[0]} (available: {have})")
        return tuple(known[i] for i in indexes)


def parse_nvidia_smi(text: str) -> tuple[Gpu, ...]:
    gpus = []
    for line in text.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 5:
            continue
        try:
            gpus.append(Gpu(int(parts[0]), parts[1], int(float(parts[2])), int(float(parts[3])),
                            float(parts[4])))
        except ValueError:
            continue
    return tuple(gpus)


def detect() -> Hardware:
    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    smi = shutil.which("nvidia-smi")
    if not smi:
        return Hardware((), has_bnb, ["no nvidia-smi: training runs on the CPU"])
    try:
        out = subprocess.run([smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        return Hardware((), has_bnb, [f"nvidia-smi failed: {e}"])
    return Hardware(parse_nvidia_smi(out.stdout), has_bnb)


def precision(gpus: tuple[Gpu, ...]) -> dict[str, bool]:
    """bf16 where every chosen GPU supports it (Ampere, compute 8.0+), else fp16; fp32 on CPU."""
    if not gpus:
        return {}
    if all(g.compute_capability >= 8.0 for g in gpus):
        return {"bf16": True}
    return {"fp16": True}
