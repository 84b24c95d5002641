"""Where model workers go, on simulated GPU tables (no GPU needed)."""

from __future__ import annotations

from app.inference.placement import (
    GIB,
    GpuSlot,
    Placed,
    free_bytes,
    place_on_gpu,
    threads_per_worker,
    worker_bytes,
)

H100 = 80 * GIB


def test_two_models_share_one_gpu_by_their_sizes():
    gpus = [GpuSlot(0, H100, 1 * GIB)]
    need = worker_bytes(15 * GIB, "huggingface")  # an 8B model in bf16
    first = place_on_gpu(gpus, need, [])
    assert first is not None and first[0] == 0
    assert abs(first[1] - need / H100) < 1e-3 and first[1] < 0.3  # not vLLM's 0.7 default
    second = place_on_gpu(gpus, need, [Placed(0, need)])
    assert second is not None and second[0] == 0  # both fit on the one GPU
    third = place_on_gpu(gpus, need, [Placed(0, need)] * 4)
    assert third is None  # 5 × ~17.5 GiB is more than 95 % of 80 GiB: evict first


def test_the_emptiest_gpu_is_chosen_and_other_programs_count():
    gpus = [GpuSlot(0, H100, 60 * GIB), GpuSlot(1, H100, 5 * GIB)]  # a training run holds GPU 0
    spot = place_on_gpu(gpus, worker_bytes(2 * GIB, "huggingface"), [])
    assert spot is not None and spot[0] == 1
    # What our workers were promised counts even before they have loaded (nvidia-smi shows less).
    assert free_bytes(gpus[1], [Placed(1, 40 * GIB)]) == int(H100 * 0.95) - 40 * GIB
    assert free_bytes(gpus[1], [Placed(0, 40 * GIB)]) == int(H100 * 0.95) - 5 * GIB


def test_a_model_too_big_for_any_gpu_is_refused():
    gpus = [GpuSlot(0, 24 * GIB, 0), GpuSlot(1, 24 * GIB, 0)]
    assert place_on_gpu(gpus, worker_bytes(30 * GIB, "huggingface"), []) is None
    assert place_on_gpu([], GIB, []) is None


def test_vllm_asks_for_kv_cache_room():
    assert worker_bytes(GIB, "vllm") > worker_bytes(GIB, "huggingface") > GIB


def test_cpu_threads_are_split_between_the_two_sides_of_a_battle():
    assert threads_per_worker(2, 3) == 1
    assert threads_per_worker(16, 3) == 8
    assert threads_per_worker(16, 1) == 16  # one worker at a time: all the cores
    assert threads_per_worker(1, 3) == 1
    assert threads_per_worker(16, 3, setting=4) == 4


def test_the_gpus_workers_may_use_come_from_the_settings(tmp_path):
    import pytest

    from app.core.settings import Settings

    assert Settings(home=tmp_path).worker_gpu_indexes is None  # all of them
    assert Settings(home=tmp_path, worker_gpus="cpu").worker_gpu_indexes == []
    assert Settings(home=tmp_path, worker_gpus=" 0, 2 ").worker_gpu_indexes == [0, 2]
    with pytest.raises(ValueError, match="worker_gpus"):
        Settings(home=tmp_path, worker_gpus="gpu0")
