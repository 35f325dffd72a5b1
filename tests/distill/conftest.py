"""Fixtures of the distillation tests (tiny synthetic data, no teacher model)."""

import pytest
from distill_fixtures import synthetic_prepared


@pytest.fixture
def prepared():
    return synthetic_prepared()
