"""The engines' contract (tests/backends/contract.py) run against a third engine: the minimal one of
tests/backends/delegating.py, which hands every call to Docker."""

from __future__ import annotations

import pytest

from tests.backends.contract import RealEngineContract, Subject, shell_subject
from tests.backends.delegating import DelegatingBackend
from tests.backends.test_contract import docker_leave, docker_posture


@pytest.mark.docker
class TestDelegating(RealEngineContract):
    @pytest.fixture
    def subject(self) -> Subject:
        return shell_subject(DelegatingBackend(), docker_leave, docker_posture)
