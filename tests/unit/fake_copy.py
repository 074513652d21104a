"""The copy's helpers as the loop's unit tests need them on the fake engine, which knows nothing of them: a
helper container, or a checkpoint exec in the resident helper, answers as runner/loop/workspace.py's checkpoint
script does for a copy with nothing new to harvest."""

from __future__ import annotations

from collections.abc import Mapping

from runner.backends.base import LABEL_ROLE, ContainerSpec
from runner.backends.fake import Behaviour, FakeRun


def nothing_new(env: Mapping[str, str]) -> FakeRun:
    """The checkpoint's last line for an unchanged copy: its head is the last one harvested."""
    return FakeRun(output=f"harness-export none {env.get('HARNESS_LAST', '0' * 40)}\n".encode())


def with_helpers(agent: Behaviour | None = None) -> Behaviour:
    """`agent` for the agent's containers; a helper container answers `nothing_new`, but the resident helper's,
    which holds only its init and runs until it is removed."""

    def act(spec: ContainerSpec) -> FakeRun:
        if spec.labels.get(LABEL_ROLE) == "helper":
            return nothing_new(spec.env) if spec.command[:2] == ["sh", "-c"] else FakeRun(hang=True)
        if agent is None:
            raise AssertionError(f"no behaviour for {spec.command}")
        return agent(spec)

    return act


def helper_exec(command: list[str], env: dict[str, str]) -> FakeRun:
    """An exec in the resident helper: a checkpoint (it is given HARNESS_LAST) answers `nothing_new`; the sweep
    and the others end clean."""
    return nothing_new(env) if "HARNESS_LAST" in env else FakeRun()
