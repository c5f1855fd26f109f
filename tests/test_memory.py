"""Freed memory kept for reuse while xband runs (`xband.run.memory`)."""

import resource

import pytest
import torch
from torch import nn

from xband.run import memory

glibc_only = pytest.mark.skipif(memory._glibc() is None, reason="glibc's malloc only")


def faults_of_passes(passes: int = 4) -> int:
    """Page faults of `passes` forward passes of 64 images of 13 bands through a convolution
    whose output (34 MB) is larger than glibc's largest own mmap threshold (32 MiB)."""
    torch.manual_seed(0)
    layer = nn.Conv2d(13, 32, 3, padding=1).eval()
    x = torch.randn(64, 13, 64, 64)
    with torch.inference_mode():
        layer(x)  # the first pass may grow the heap
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(passes):
            layer(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@glibc_only
def test_freed_blocks_are_reused_inside_and_handed_back_after():
    with memory.freed_memory_kept():
        kept = faults_of_passes()
    handed_back = faults_of_passes()
    assert handed_back > 4 * max(kept, 1), (kept, handed_back)


@glibc_only
def test_nested_uses_keep_the_setting_until_the_last_one_leaves():
    with memory.freed_memory_kept():
        with memory.freed_memory_kept():
            pass
        still_kept = faults_of_passes()
    handed_back = faults_of_passes()
    assert handed_back > 4 * max(still_kept, 1), (still_kept, handed_back)


@glibc_only
def test_a_process_whose_user_tuned_malloc_is_left_as_it_is(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "100000")
    memory._glibc.cache_clear()
    try:
        assert memory.allocator() == "glibc as the user tuned it"
        with memory.freed_memory_kept():
            untouched = faults_of_passes()
        assert untouched > faults_of_passes() / 4  # freed blocks handed back as before
    finally:
        monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
        memory._glibc.cache_clear()
