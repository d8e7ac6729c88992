"""Shared pytest setup: quiet progress bars and a fixed seed for every test."""

import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("SPEECHSSL_PROGRESS", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "first: a long test, run before the others")


def pytest_collection_modifyitems(items):
    """Long tests first (``@pytest.mark.first``): under two xdist workers, one runs a long test while the other
    works through the rest, instead of one worker finishing it alone after the others are done."""
    items.sort(key=lambda item: item.get_closest_marker("first") is None)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
