"""Fixtures of the infra suite: the real ``__main__.py`` run once per committed stack file
under GCP-shaped mocks (stack_review)."""

from __future__ import annotations

import pytest

from stack_review import StackRun
from stack_settings import StackSettings, load_stack_file
from tests.infra.helpers import STACK_FILES, committed_run


@pytest.fixture(scope="session", params=STACK_FILES)
def stack_file(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def stack(stack_file: str) -> StackRun:
    """One full run of the program for this stack."""
    return committed_run(stack_file)


@pytest.fixture(scope="session")
def settings(stack_file: str) -> StackSettings:
    return load_stack_file(stack_file)
