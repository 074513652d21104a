"""One contract, every backend: the fake must behave like Docker where the supervisor relies on it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from runner.backends.base import Backend, ContainerSpec
from runner.backends.fake import FakeBackend
from runner.errors import ImageMissingError
from runner.models import Limits
from runner.output import CappedBuffer
from runner.sandbox import hardened_spec, labels
from tests.conftest import TEST_RUN_LABEL


@dataclass
class Subject:
    backend: Backend
    echo_exit: Callable[[str, int], list[str]]
    sleep: Callable[[float], list[str]]
    leave_container: Callable[[dict[str, str]], None]


def _docker_leave(extra: dict[str, str]) -> None:
    label_args = [arg for k, v in extra.items() for arg in ("--label", f"{k}={v}")]
    subprocess.run(
        [
            "docker",
            "create",
            "--label",
            f"io.solo-harness.test={TEST_RUN_LABEL}",
            *label_args,
            "--network",
            "none",
            "harness-base:latest",
            "true",
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture(params=["fake", pytest.param("docker", marks=pytest.mark.docker)])
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    if request.param == "fake":
        fake = FakeBackend()
        yield Subject(
            fake,
            lambda text, code: ["fake:echo-exit", text, str(code)],
            lambda seconds: ["fake:sleep", str(seconds)],
            lambda extra: fake.existing.__setitem__(f"left{len(fake.existing)}", dict(extra)),
        )
    else:
        from runner.backends.docker import DockerBackend

        yield Subject(
            DockerBackend(),
            lambda text, code: ["sh", "-c", f"echo {text}; exit {code}"],
            lambda seconds: ["sleep", str(seconds)],
            _docker_leave,
        )


def spec(command: list[str], image: str = "harness-base:latest") -> ContainerSpec:
    return hardened_spec(
        image=image,
        command=command,
        limits=Limits(memory_bytes=128 * 1024**2),
        mounts=(),
        labels=labels("contract", "k", "agent"),
        workdir="/tmp",
    )


def test_output_and_exit_code(subject: Subject) -> None:
    out = CappedBuffer()
    result = subject.backend.run(spec(subject.echo_exit("hello-contract", 3)), timeout=60, output=out)
    assert result.exit_code == 3 and not result.timed_out and not result.oom_killed
    assert "hello-contract" in out.text()
    assert result.container_id


def test_the_watchdog_stops_a_container_past_its_timeout(subject: Subject) -> None:
    result = subject.backend.run(spec(subject.sleep(120)), timeout=1, output=CappedBuffer(), stop_grace=2)
    assert result.timed_out and result.duration_seconds < 60


def test_a_missing_image_is_a_translated_error(subject: Subject) -> None:
    with pytest.raises(ImageMissingError):
        subject.backend.run(
            spec(subject.echo_exit("x", 0), image="harness-test-absent:0"), timeout=10, output=CappedBuffer()
        )


def test_containers_are_listed_and_reaped_by_label(subject: Subject) -> None:
    marker = {"io.solo-harness.session": "contract-reap", "io.solo-harness.managed": "1"}
    subject.leave_container(marker)
    found = subject.backend.list_containers(marker)
    assert len(found) == 1
    assert next(iter(found.values()))["io.solo-harness.session"] == "contract-reap"
    assert subject.backend.reap(marker) == list(found)
    assert subject.backend.list_containers(marker) == {}


def test_engine_check(subject: Subject) -> None:
    info = subject.backend.check()
    assert info.version and "runc" in info.runtimes
