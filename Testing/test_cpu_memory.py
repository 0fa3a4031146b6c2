"""Freed memory kept for reuse during the window loop (issue 17, segmentation/cpu_memory.py):
inside the block large blocks come from glibc's heap, outside (and after it) from memory maps
again; the network's answer is the same either way."""

from __future__ import annotations

import ctypes
import platform

import numpy as np
import pytest

from mediastinal_ai.segmentation import cpu_memory

glibc = pytest.mark.skipif(not cpu_memory.available(), reason="glibc only (mallopt / malloc_trim)")


def _heap_end() -> int:
    libc = ctypes.CDLL(None)
    libc.sbrk.restype = ctypes.c_void_p
    libc.sbrk.argtypes = [ctypes.c_long]
    return int(libc.sbrk(0))


def _large_block_in_the_heap() -> bool:
    """Whether a fresh 64 MB block (over glibc's largest mmap threshold) lies below the program
    break, i.e. in glibc's heap, not in a memory map of its own (those lie far above it)."""
    block = np.ones(64 << 20, np.uint8)
    inside = block.ctypes.data < _heap_end()
    del block
    return inside


@glibc
def test_large_blocks_come_from_the_heap_inside_and_from_maps_after():
    assert not _large_block_in_the_heap()
    with cpu_memory.reuse_freed_memory() as on:
        assert on is True
        assert _large_block_in_the_heap()
        first = np.ones(64 << 20, np.uint8)
        addr = first.ctypes.data
        del first
        again = np.ones(64 << 20, np.uint8)
        assert again.ctypes.data == addr  # the freed block was kept and given back out
        del again
    assert not _large_block_in_the_heap()


@glibc
def test_nested_blocks_restore_only_at_the_outermost():
    with cpu_memory.reuse_freed_memory():
        with cpu_memory.reuse_freed_memory() as inner:
            assert inner is True
        assert _large_block_in_the_heap()  # still in force after the inner block
    assert cpu_memory._depth == 0


def test_disabled_or_elsewhere_it_does_nothing(monkeypatch):
    with cpu_memory.reuse_freed_memory(enabled=False) as on:
        assert on is False
    monkeypatch.setattr(cpu_memory, "_glibc", lambda: None)
    with cpu_memory.reuse_freed_memory() as on:
        assert on is False
    assert cpu_memory._depth == 0


def test_the_window_network_gives_the_same_logits_inside_the_block():
    torch = pytest.importorskip("torch")
    from mediastinal_ai.segmentation.inference import cpu_window_module
    from mediastinal_ai.segmentation.network import UNet3D

    torch.manual_seed(0)
    net = cpu_window_module(UNet3D((8, 16, 32, 64)).eval(), "fp32")
    x = torch.randn(2, 1, 16, 32, 32).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        ref = net(x)
        with cpu_memory.reuse_freed_memory():
            got = net(x)
    assert torch.equal(ref, got)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="not a glibc system")
def test_glibc_is_found_where_python_runs_on_it():
    # the CI and the developers' machines are glibc Linux: the speed-up must be in force there
    assert cpu_memory.available()
