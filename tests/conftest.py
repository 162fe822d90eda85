"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest


@pytest.fixture
def one_thread(request: pytest.FixtureRequest):
    """Run a test with one torch thread (opt in with ``pytest.mark.usefixtures("one_thread")``).

    Small models gain nothing from threads and, on a busy 2-core machine, lose 10-50x
    to OpenMP barriers waiting for a descheduled thread. Tests marked ``slow`` (full-size
    models) keep their threads.
    """
    import torch

    if request.node.get_closest_marker("slow"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
