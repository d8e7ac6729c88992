"""Shared pytest setup: quiet progress bars and a fixed seed for every test."""

import os
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("SPEECHSSL_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
