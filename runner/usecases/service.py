"""`harness service install|status|uninstall`: the user-level service that runs `harness service run-once`
(runner/usecases/autoresume.py) at login, or at boot for a user with lingering, so the sessions a reboot
interrupted go on by themselves.

- **systemd** (Linux): a user unit, `$XDG_CONFIG_HOME/systemd/user/harness-resume.service` (`~/.config/...` by
  default: the directory the user's manager reads, and the seam the tests point at a temp dir), a oneshot
  wanted by default.target, enabled with `systemctl --user enable` (which also works offline, without a running
  user manager: it makes the default.target.wants link that manager reads when it starts). When systemctl
  cannot enable it, the unit is still written and the result says what to run.
- **launchd** (macOS): a LaunchAgent, `~/Library/LaunchAgents/dev.solo-harness.resume.plist`, RunAtLoad, which
  launchd loads at the next login (`launchctl bootstrap gui/UID PLIST` loads it now). Written, not tested here.
- Elsewhere: refused, with the reason.

The service runs this harness (the absolute path of its Python, `-m runner`), with the environment that locates
the harness's state and the engine as it was at install time (HARNESS_HOME, XDG_*, DOCKER_HOST, PATH...); never a
secret. Model keys for the resumed sessions go in a file only the user reads (`harness/service.env` in the
config directory), which the systemd unit reads when it exists.
"""

from __future__ import annotations

import os
import plistlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

from runner.base.atomic import write_atomic
from runner.base.errors import UsageError
from runner.base.paths import data_home
from runner.base.seams import ENV_PREFIX, SEAMS
from runner.record.models import CamelModel

UNIT = "harness-resume.service"
AGENT_LABEL = "dev.solo-harness.resume"
WANTED_BY = "default.target"
# What locates the harness's state and the engine, carried from the installing shell into the service.
CARRIED = (
    *(ENV_PREFIX + name.upper() for name in SEAMS),
    "XDG_DATA_HOME",
    "XDG_CONFIG_HOME",
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "KUBECONFIG",
    "PATH",
)
SYSTEMCTL_SECONDS = 30.0

Manager = Literal["systemd", "launchd"]


class ServiceInfo(CamelModel):
    """The user service as it stands (what `install`, `status` and `uninstall` return)."""

    manager: Manager  # systemd (a user unit) or launchd (a LaunchAgent)
    path: str  # the unit or the plist
    installed: bool
    enabled: bool | None  # systemd: wanted by default.target; launchd: not known (null)
    command: list[str]  # what it runs: the installed one, else what install would write
    current: bool | None  # whether the installed command is this harness's (null: not installed)
    environment_file: str | None  # systemd: the optional file of model keys the unit reads
    note: str = ""  # what to run by hand, when something is left to do


def service_command() -> list[str]:
    """This harness, as the service runs it: its Python (the venv's own path, not resolved) and `-m runner`."""
    return [sys.executable, "-m", "runner", "service", "run-once"]


def manager(platform: str = sys.platform) -> Manager:
    if platform.startswith("linux"):
        return "systemd"
    if platform == "darwin":
        return "launchd"
    raise UsageError(f"harness service: this system ({platform}) has no user service manager the harness knows "
                     "(systemd, launchd); run 'harness service run-once' from your own start-up instead")  # fmt: skip


def config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def unit_path() -> Path:
    return config_home() / "systemd" / "user" / UNIT


def plist_path() -> Path:
    return Path.home() / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist"


def secrets_file() -> Path:
    return config_home() / "harness" / "service.env"


def carried_environment() -> dict[str, str]:
    """The installing shell's variables that locate the harness's state and the engine (never a secret)."""
    found = {name: os.environ[name] for name in CARRIED if os.environ.get(name)}
    for name, value in found.items():
        if any(ord(c) < 32 for c in value):
            raise UsageError(f"harness service: ${name} holds a control character: it cannot go in a unit file")
    return found


def _word(text: str, *, dollars: bool = False) -> str:
    """One word of a unit file's line, quoted when needed: `%` specifiers escaped, and `$` where systemd
    substitutes variables (ExecStart's arguments, not its program)."""
    escaped = _specifiers(text).replace("\\", "\\\\").replace('"', '\\"')
    if dollars:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"' if not text or re.search(r"[\s\"'\\;%$]", text) else escaped


def _specifiers(text: str) -> str:
    """`text` with systemd's `%` specifiers escaped; a control character (a newline would start a new
    setting) is refused."""
    if any(ord(c) < 32 for c in text):
        raise UsageError(f"harness service: {text!r} holds a control character: it cannot go in a unit file")
    return text.replace("%", "%%")


def systemd_unit(command: list[str], environment: dict[str, str], env_file: Path) -> str:
    """The user unit: a oneshot at login (or boot, with lingering) that resumes interrupted sessions."""
    env_lines = [f"Environment={_word(f'{k}={v}')}" for k, v in sorted(environment.items())]
    program, *args = command
    return "\n".join([
        "# Written by `harness service install` (docs/overnight.md): at login, or at boot with lingering, it resumes",
        "# the harness sessions the machine's going down interrupted. `harness service uninstall` removes it.",
        "[Unit]",
        "Description=Resume the harness sessions a reboot interrupted",
        "",
        "[Service]",
        "Type=oneshot",
        "ExecStart=" + " ".join([_word(program), *(_word(arg, dollars=True) for arg in args)]),
        "# Each resumed session runs on in its own detached supervisor after this command returns: keep them.",
        "KillMode=process",
        *env_lines,
        "# Model keys for the resumed sessions (KEY=value lines, readable by you alone), when the file exists.",
        f"EnvironmentFile=-{_specifiers(str(env_file))}",  # a path: the rest of the line, unquoted
        "",
        "[Install]",
        f"WantedBy={WANTED_BY}",
        "",
    ])  # fmt: skip


def launchd_plist(command: list[str], environment: dict[str, str], log: Path) -> bytes:
    """The LaunchAgent: run once at load (login); the detached supervisors it starts are left running."""
    return plistlib.dumps({
        "Label": AGENT_LABEL,
        "ProgramArguments": command,
        "RunAtLoad": True,
        "AbandonProcessGroup": True,
        "EnvironmentVariables": environment,
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
    })  # fmt: skip


def _systemctl(*args: str) -> tuple[bool, str]:
    """`systemctl --user ARGS`: whether it succeeded, and its first line of output."""
    program = shutil.which("systemctl")
    if program is None:
        return False, "systemctl is not on PATH"
    try:
        proc = subprocess.run([program, "--user", *args], capture_output=True, text=True,
                              timeout=SYSTEMCTL_SECONDS, check=False)  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, f"systemctl --user {' '.join(args)} did not answer within {SYSTEMCTL_SECONDS:g}s"
    said = (proc.stdout + proc.stderr).strip().splitlines()
    return proc.returncode == 0, said[0] if said else f"exit {proc.returncode}"


def _enabled() -> bool:
    """Whether the user's manager starts the unit: `is-enabled` when systemctl answers, else its wants link."""
    ok, said = _systemctl("is-enabled", UNIT)
    if said in {"enabled", "disabled", "linked", "static"} or ok:
        return said == "enabled"
    return (unit_path().parent / f"{WANTED_BY}.wants" / UNIT).exists()


def _installed_command(path: Path, kind: Manager) -> list[str] | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read ({exc.strerror})") from None
    if kind == "launchd":
        try:
            found = plistlib.loads(data).get("ProgramArguments")
        except (plistlib.InvalidFileException, ValueError, AttributeError):
            return []
        return [str(arg) for arg in found] if isinstance(found, list) else []
    for line in data.decode("utf-8", "replace").splitlines():
        if line.startswith("ExecStart="):
            return _unquote(line.removeprefix("ExecStart="))
    return []


def _unquote(line: str) -> list[str]:
    """ExecStart's words, as _word wrote them."""
    words = [quoted or bare for quoted, bare in re.findall(r'"((?:[^"\\]|\\.)*)"|(\S+)', line)]
    out = [re.sub(r"\\(.)", r"\1", word).replace("%%", "%") for word in words]
    return out[:1] + [word.replace("$$", "$") for word in out[1:]]


def service_status(platform: str = sys.platform) -> ServiceInfo:
    kind = manager(platform)
    path = unit_path() if kind == "systemd" else plist_path()
    installed = _installed_command(path, kind)
    command = installed if installed is not None else service_command()
    note = "" if installed is not None else "not installed: 'harness service install' installs it"
    enabled: bool | None = None
    if kind == "systemd" and installed is not None:
        enabled = _enabled()
        if not enabled:
            note = f"installed but not enabled: run 'systemctl --user enable {UNIT}'"
    current = None if installed is None else installed == service_command()
    if current is False:
        note = "installed for another harness than this one: 'harness service install' replaces it"
    return ServiceInfo(
        manager=kind, path=str(path), installed=installed is not None, enabled=enabled, command=command,
        current=current, environment_file=str(secrets_file()) if kind == "systemd" else None, note=note,
    )  # fmt: skip


def install(platform: str = sys.platform) -> ServiceInfo:
    """Write the unit (or plist) for this harness, replacing an earlier one, and enable it where possible."""
    kind = manager(platform)
    command, environment = service_command(), carried_environment()
    if kind == "launchd":
        path = plist_path()
        _write(path, launchd_plist(command, environment, data_home() / "service.log"))
        info = service_status(platform)
        info.note = f"launchd loads it at your next login; to load it now: launchctl bootstrap gui/{os.getuid()} {path}"
        return info
    path = unit_path()
    _write(path, systemd_unit(command, environment, secrets_file()))
    reachable, _ = _systemctl("daemon-reload")  # a running user manager reads the new unit
    ok, said = _systemctl("enable", UNIT)
    info = service_status(platform)
    if ok and info.enabled:
        linger = "" if reachable else " (no user manager answers now: it reads the unit when it starts)"
        info.note = (f"enabled: it runs at your next login{linger}; for it to run at boot without a login: "
                     f"loginctl enable-linger {_user()}")  # fmt: skip
    else:
        info.note = (f"written, not enabled ({said}): run 'systemctl --user daemon-reload && systemctl --user "
                     f"enable {UNIT}'")  # fmt: skip
    return info


def uninstall(platform: str = sys.platform) -> ServiceInfo:
    """Disable and remove the unit (or plist); nothing to do when none is installed."""
    kind = manager(platform)
    if kind == "launchd":
        path = plist_path()
        path.unlink(missing_ok=True)
        info = service_status(platform)
        info.note = f"removed; if it is loaded now: launchctl bootout gui/{os.getuid()}/{AGENT_LABEL}"
        return info
    path = unit_path()
    if path.exists():
        _systemctl("disable", UNIT)
        (path.parent / f"{WANTED_BY}.wants" / UNIT).unlink(missing_ok=True)  # if systemctl could not
        path.unlink()
        _systemctl("daemon-reload")
    return service_status(platform)


def _write(path: Path, data: str | bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, mode=0o644)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write ({exc.strerror})") from None


def _user() -> str:
    import getpass

    return getpass.getuser()
