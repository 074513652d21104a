"""Notification targets (`--notify`) and events (`--notify-on`): what each form means, the form the journal, the
logs and `--dry-run` may show (kind and host only), and the file that keeps a session's targets as given.

A target's URL carries its secrets (Slack's `/services/T…/B…/…`, an ntfy topic, a token in the query, a user and
password): only `shown` ever leaves this module for a log, the journal or a plan. The targets as given are kept in
the harness home (`notify/REPO-KEY-SESSION.json`, mode 0600 in a 0700 directory), which `resume` and a detached
or restarted supervisor read, and `discard` removes; never in the journal directory.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from runner.base.atomic import write_atomic
from runner.base.errors import JournalError, UsageError
from runner.base.paths import data_home, repo_key
from runner.base.redact import MIN_SECRET_LENGTH
from runner.record.journal import RACE, SUMMARY, load_model
from runner.record.models import NotifyEvent, NotifyInfo, NotifyTargets

Kind = Literal["cmd", "webhook", "slack", "ntfy"]
CMD_PREFIX = "cmd:"
# The URL schemes of --notify: the shape of the POST is the kind (docs/overnight.md, "Notifications").
SCHEMES: dict[str, Kind] = {
    "https": "webhook",
    "http": "webhook",
    "slack+https": "slack",
    "slack+http": "slack",
    "ntfy+https": "ntfy",
    "ntfy+http": "ntfy",
}
# A `cmd:` target runs without a shell (split as a POSIX shell would split it) unless its text holds one of these,
# or starts with a variable assignment: then it runs with `/bin/sh -c`.
SHELL_CHARS = frozenset("|&;<>()$`*?[]{}~#\n")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
DEFAULT_EVENTS = (NotifyEvent.END,)
TARGETS_DIR = "notify"


@dataclass(frozen=True)
class NotifyTarget:
    """One --notify target, parsed."""

    text: str  # as given: holds its secrets, never logged
    kind: Kind
    url: str | None = None  # http(s) URL to POST to, without the kind's prefix and without user and password
    auth: tuple[str, str] | None = None  # the URL's user and password (sent as HTTP basic auth)
    argv: tuple[str, ...] = ()  # the command to run (`/bin/sh -c TEXT` when it needs a shell)
    via_shell: bool = False

    @property
    def shown(self) -> str:
        """What a log, the journal, `status` or `--dry-run` may show: the kind and host, or the command's name."""
        if self.kind == "cmd":
            command = self.text[len(CMD_PREFIX) :].strip()
            first = command.split()[0] if command.split() else ""
            return f"{CMD_PREFIX}{first} …" if command != first else f"{CMD_PREFIX}{first}"
        parts = urlsplit(self.text)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host
        port = f":{parts.port}" if parts.port is not None else ""
        return f"{parts.scheme}://{host}{port}/…"

    def secrets(self) -> dict[str, str]:
        """The parts of the target that are secret, for a Redactor over what a delivery prints or raises."""
        found: dict[str, str] = {"notify-target": self.text}
        if self.kind == "cmd":
            found["notify-command"] = self.text[len(CMD_PREFIX) :].strip()
            words = self.text.split()[1:]
            found.update({f"notify-arg-{i}": word for i, word in enumerate(words)})
            for i, word in enumerate(words):
                if "://" in word:
                    found.update({f"notify-arg-{i}-{k}": v for k, v in _url_secrets(word).items()})
        else:
            found.update(_url_secrets(self.text))
        return {name: value for name, value in found.items() if len(value.encode()) >= MIN_SECRET_LENGTH}


def _url_secrets(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    found = {"notify-url": url}
    if parts.username:
        found["notify-user"] = unquote(parts.username)
        found["notify-user-raw"] = parts.username
    if parts.password:
        found["notify-password"] = unquote(parts.password)
        found["notify-password-raw"] = parts.password
    if parts.path.strip("/"):
        found["notify-path"] = parts.path
    for i, segment in enumerate(s for s in parts.path.split("/") if s):
        found[f"notify-path-{i}"] = segment
        found[f"notify-path-{i}-decoded"] = unquote(segment)
    if parts.query:
        found["notify-query"] = parts.query
    for i, (_, value) in enumerate(parse_qsl(parts.query, keep_blank_values=True)):
        found[f"notify-query-{i}"] = value
    if parts.fragment:
        found["notify-fragment"] = parts.fragment
    return found


def _beginning(text: str) -> str:
    """What an error may echo of a target that is not one: the letters of its scheme at most (the rest may be a
    secret)."""
    scheme = re.match(r"[A-Za-z][A-Za-z0-9+.-]{0,15}", text)
    return f"{scheme.group(0)}…" if scheme else "…"


def parse_target(text: str) -> NotifyTarget:
    """One --notify target; ValueError (naming no secret) when it is not one."""
    if text.startswith(CMD_PREFIX):
        command = text[len(CMD_PREFIX) :].strip()
        if not command:
            raise ValueError("cmd: needs a command (cmd:COMMAND)")
        if SHELL_CHARS & set(command) or _ASSIGNMENT.match(command):
            return NotifyTarget(text=text, kind="cmd", argv=("/bin/sh", "-c", command), via_shell=True)
        try:
            argv = tuple(shlex.split(command))
        except ValueError as exc:
            raise ValueError(f"cmd: cannot split the command ({exc})") from None
        return NotifyTarget(text=text, kind="cmd", argv=argv)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    kind = SCHEMES.get(scheme)
    if kind is None:
        raise ValueError(
            f"{_beginning(text)!r} is not a notification target: give cmd:COMMAND, https://URL (the report's "
            "JSON), slack+https://URL (a Slack incoming webhook) or ntfy+https://URL (an ntfy topic)"
        )
    parts = urlsplit(text)
    if not parts.hostname:
        raise ValueError(f"{scheme}:// target without a host")
    try:
        parts.port  # noqa: B018 - raises on a port that is not one
    except ValueError:
        raise ValueError(f"{scheme}:// target with a bad port") from None
    plain = scheme.split("+")[-1]
    netloc = parts.netloc.rsplit("@", 1)[-1]
    url = parts._replace(scheme=plain, netloc=netloc, fragment="").geturl()
    auth = (unquote(parts.username or ""), unquote(parts.password or "")) if parts.username is not None else None
    return NotifyTarget(text=text, kind=kind, url=url, auth=auth)


def parse_events(values: Iterable[str]) -> list[NotifyEvent]:
    """--notify-on as given (repeatable, each a comma-separated list; `all` for every event), in a fixed order."""
    chosen: set[NotifyEvent] = set()
    for value in values:
        for name in (part.strip() for part in value.split(",")):
            if not name:
                continue
            if name == "all":
                chosen.update(NotifyEvent)
                continue
            try:
                chosen.add(NotifyEvent(name))
            except ValueError:
                known = ", ".join([*(e.value for e in NotifyEvent), "all"])
                raise ValueError(f"{name!r} is not an event to notify: one of {known}") from None
    if not chosen:
        raise ValueError("no event to notify: give one or more of " + ", ".join(e.value for e in NotifyEvent))
    return [event for event in NotifyEvent if event in chosen]


def racer_events(events: Iterable[NotifyEvent]) -> list[NotifyEvent]:
    """What a race's racers send of the events chosen for the race: every one but `end` (the race's own end is
    the race's one notification; a racer's end is not told by itself, docs/race.md)."""
    return [event for event in events if event is not NotifyEvent.END]


def notify_info(targets: Iterable[str], events: Iterable[NotifyEvent]) -> NotifyInfo:
    """The form of a session's notifications the journal and the plan show."""
    return NotifyInfo(targets=[parse_target(t).shown for t in targets], events=list(events))


def shown_targets(targets: Iterable[str]) -> list[str]:
    """The targets as a plan's `options` may show them; one that is not a target is refused by `notify_plan`."""
    shown = []
    for target in targets:
        try:
            shown.append(parse_target(target).shown)
        except ValueError:
            shown.append("(not a target)")
    return shown


def notify_plan(targets: tuple[str, ...], events: tuple[str, ...]) -> NotifyInfo | None:
    """The notifications a run will send, checked (UsageError naming no secret); None without a target."""
    try:
        for target in targets:
            parse_target(target)
        chosen = parse_events(events)
    except ValueError as exc:
        raise UsageError(f"--notify: {exc}") from None
    return notify_info(targets, chosen) if targets else None


def targets_path(repo: Path, session: str) -> Path:
    return data_home() / TARGETS_DIR / f"{repo_key(repo)}-{session}.json"


def save_targets(
    repo: Path, session: str, targets: Iterable[str], events: Iterable[NotifyEvent], *, journal_dir: Path
) -> None:
    """Keep the session's targets (secrets included) where only the user can read them; none: remove the file."""
    path = targets_path(repo, session)
    kept = NotifyTargets(session_id=session, repo=str(repo), journal_dir=str(journal_dir), targets=list(targets),
                         events=list(events))  # fmt: skip
    if not kept.targets:
        remove_targets(repo, session)
        return
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        write_atomic(path, kept.dump_json(), mode=0o600)
    except OSError as exc:
        raise JournalError(f"{path}: cannot keep the notification targets ({exc.strerror})") from None


def load_targets(repo: Path, session: str) -> NotifyTargets | None:
    """The session's targets as given; None when it has none."""
    path = targets_path(repo, session)
    if not path.exists():
        return None
    return load_model(path, NotifyTargets)


def remove_targets(repo: Path, session: str) -> None:
    try:
        targets_path(repo, session).unlink(missing_ok=True)
    except OSError as exc:
        raise JournalError(f"{targets_path(repo, session)}: cannot remove ({exc.strerror})") from None


def forget_orphans() -> list[str]:
    """Remove the kept targets of sessions (and races) whose journal is gone (deleted by hand, or its repository);
    `gc` calls it. A file that does not say where its journal is, or cannot be read, is left alone."""
    folder = data_home() / TARGETS_DIR
    removed = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            kept = load_model(path, NotifyTargets)
        except JournalError:
            continue
        journal = Path(kept.journal_dir) if kept.journal_dir is not None else None
        if journal is not None and not (journal / SUMMARY).exists() and not (journal / RACE).exists():
            path.unlink(missing_ok=True)
            removed.append(str(path))
    return removed
