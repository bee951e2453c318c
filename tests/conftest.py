import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (as the test trainers use): two threads collapse when another process holds a
    core, and tiny tensors gain nothing from more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
