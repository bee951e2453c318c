"""Blocks on single-threaded worker threads (architectures.block_threads) and the attention that uses them."""
from __future__ import annotations

import multiprocessing
import threading

import pytest
import torch

from nnunet_lmnet.architectures import block_threads
from nnunet_lmnet.architectures import neighborhood_attention as na_module
from nnunet_lmnet.architectures.neighborhood_attention import neighborhood_attention


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _where(blocks):
    return [(threading.current_thread().name, torch.get_num_threads(), torch.is_grad_enabled(),
             torch.is_inference_mode_enabled(), x * 10) for x in blocks]


def test_results_in_block_order_from_single_threaded_workers(two_threads):
    both_running = threading.Barrier(2)

    def work(blocks):
        both_running.wait(30)  # fails (BrokenBarrierError) unless two workers run at the same time
        return _where(blocks)

    out = block_threads.run_blocks(work, list(range(7)), workers=2)
    assert [r[4] for r in out] == [x * 10 for x in range(7)]
    assert all(r[0].startswith("nnunet-lmnet-blocks") for r in out)
    assert {r[1] for r in out} == {1}  # one intra-op thread each
    assert torch.get_num_threads() == 2
    seen = []  # a thread started afterwards gets the caller's count, not the workers' (process-wide value restored)
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [2]


def test_workers_run_in_the_callers_grad_and_inference_modes(two_threads):
    with torch.inference_mode():
        assert {r[2:4] for r in block_threads.run_blocks(_where, [1, 2], workers=2)} == {(False, True)}
    with torch.no_grad():
        assert {r[2:4] for r in block_threads.run_blocks(_where, [1, 2], workers=2)} == {(False, False)}
    assert {r[2:4] for r in block_threads.run_blocks(_where, [1, 2], workers=2)} == {(True, False)}


def test_one_worker_runs_in_the_calling_thread(two_threads):
    out = block_threads.run_blocks(_where, [1, 2, 3], workers=1)
    assert {r[0] for r in out} == {threading.current_thread().name} and {r[1] for r in out} == {2}


def test_worker_errors_reach_the_caller(two_threads):
    def fail(blocks):
        raise ValueError(f"block {next(blocks)}")

    with pytest.raises(ValueError, match="block [01]"):
        block_threads.run_blocks(fail, [0, 1], workers=2)


def test_when_blocks_go_to_workers(two_threads, monkeypatch):
    cpu = torch.device("cpu")
    assert block_threads.block_workers(cpu, 5) == 2
    assert block_threads.block_workers(cpu, 1) == 1  # one block: all threads on it, here
    assert block_threads.block_workers(torch.device("meta"), 5) == 1  # not a CPU tensor
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert block_threads.block_workers(cpu, 5) == 1
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert block_threads.block_workers(cpu, 5) == 1
    monkeypatch.undo()
    torch.set_num_threads(1)
    assert block_threads.block_workers(cpu, 5) == 1


def _child(queue):
    torch.set_num_threads(2)
    queue.put(block_threads.run_blocks(lambda blocks: [x + 1 for x in blocks], [1, 2, 3], workers=2))


def test_a_forked_child_builds_its_own_workers(two_threads):
    """A fork copies the pool object but not its threads: the child must not wait for them."""
    block_threads.run_blocks(_where, [1, 2], workers=2)  # the parent's pool exists
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_child, args=(queue,))
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung on the parent's worker threads")
    assert child.exitcode == 0 and queue.get(timeout=5) == [2, 3, 4]


@pytest.mark.parametrize("spatial,kernel", [((8, 16), 3), ((4, 8, 8), (1, 3, 3))], ids=["2d", "3d-aniso"])
def test_attention_on_workers_equals_the_calling_thread_float64(two_threads, monkeypatch, spatial, kernel):
    """Same values and gradients bit for bit (the RPB gradient is summed in block order either way)."""
    kern = na_module._normalize_kernel(kernel, len(spatial))
    per_head = 9 * torch.Size(spatial).numel() * 8
    monkeypatch.setattr(na_module, "_BLOCK_BYTES", per_head)  # one head per block
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, *spatial, 2, dtype=torch.float64, generator=g) for _ in range(3))
    rpb = torch.randn(3, *[2 * x - 1 for x in kern], dtype=torch.float64, generator=g)
    grad_out = torch.randn(2, 3, *spatial, 2, dtype=torch.float64, generator=g)
    plan_workers = na_module._block_plan(q.movedim(-1, 2), kern)[1]
    assert plan_workers == 2

    def run():
        inputs = [t.clone().requires_grad_() for t in (q, k, v, rpb)]
        out = neighborhood_attention(*inputs[:3], kernel, inputs[3])
        with torch.no_grad():
            inference = neighborhood_attention(q, k, v, kernel, rpb)
        return [out.detach(), inference, *torch.autograd.grad(out, inputs, grad_out)]

    on_workers = run()
    monkeypatch.setattr(na_module, "block_workers", lambda device, n: 1)
    here = run()
    for a, b in zip(on_workers, here):
        assert torch.equal(a, b)


def test_one_pool_per_thread_count_reused_across_calls(two_threads):
    block_threads.run_blocks(_where, [1, 2], workers=2)
    pool = block_threads._pool[2]
    block_threads.run_blocks(_where, [1, 2, 3], workers=1)
    block_threads.run_blocks(_where, [1, 2, 3], workers=2)
    assert block_threads._pool[2] is pool
    torch.set_num_threads(3)
    block_threads.run_blocks(_where, [1, 2], workers=2)  # two blocks, three threads: a pool of three
    assert block_threads._pool[1] == 3
    pool = block_threads._pool[2]
    block_threads.run_blocks(_where, [1, 2, 3, 4], workers=3)
    assert block_threads._pool[2] is pool
