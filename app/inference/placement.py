"""Where a model worker runs: which GPU, what share of its memory, how many CPU threads.

Pure arithmetic over a table of GPUs and the workers already placed, so it is tested
on simulated machines. A worker asks for its weights plus room for activations and
the KV cache; several workers share one GPU as long as their shares fit.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
# Keep a little of every GPU for the CUDA context of each process and fragmentation.
GPU_USABLE = 0.95
# Beyond the weights: activations and KV cache for a few concurrent answers (HF backend);
# vLLM / SGLang preallocate a KV-cache pool, so they get more.
EXTRA_BYTES = {"huggingface": 1 * GIB, "vllm": 3 * GIB, "sglang": 3 * GIB}


@dataclass(frozen=True)
class GpuSlot:
    index: int
    total_bytes: int
    used_bytes: int  # as nvidia-smi reports it: our workers, training jobs, other programs


@dataclass(frozen=True)
class Placed:
    """A live worker's share of a GPU."""

    gpu: int
    bytes: int


@dataclass(frozen=True)
class Placement:
    gpu: int | None  # None: the CPU
    memory_fraction: float | None
    threads: int


def worker_bytes(weights_bytes: int, backend: str) -> int:
    """Memory one worker asks for: the weights (same dtype once loaded) and the extra."""
    return int(weights_bytes * 1.1) + EXTRA_BYTES.get(backend, EXTRA_BYTES["huggingface"])


def threads_per_worker(cores: int, max_workers: int, setting: int = 0) -> int:
    """CPU threads for one worker. Two sides of a battle answer at once, so by default each
    worker gets half the cores (all of them when only one worker may run)."""
    if setting > 0:
        return setting
    return max(1, cores // max(1, min(max_workers, 2)))


def free_bytes(gpu: GpuSlot, placed: list[Placed]) -> int:
    """What is left on ``gpu``: its usable memory less whichever is larger, what nvidia-smi
    says is used or what our workers there were promised (a worker still loading uses
    less than its share; the reported figure also counts programs we did not start)."""
    promised = sum(p.bytes for p in placed if p.gpu == gpu.index)
    return int(gpu.total_bytes * GPU_USABLE) - max(gpu.used_bytes, promised)


def place_on_gpu(gpus: list[GpuSlot], need: int, placed: list[Placed]) -> tuple[int, float] | None:
    """The GPU with the most free memory that holds ``need`` bytes, and the fraction of it
    the worker may use; None when none has room (evict a worker, then ask again)."""
    best = max(gpus, key=lambda g: free_bytes(g, placed), default=None)
    if best is None or free_bytes(best, placed) < need:
        return None
    return best.index, round(min(GPU_USABLE, need / best.total_bytes), 4)


def largest_free(gpus: list[GpuSlot], placed: list[Placed]) -> int:
    return max((free_bytes(g, placed) for g in gpus), default=0)
