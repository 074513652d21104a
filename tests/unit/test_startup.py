import subprocess
import sys


def test_status_and_the_cli_do_not_import_the_docker_sdk() -> None:
    code = (
        "import sys, runner.cli.app, runner.cli.render, runner.status, runner.gc, runner.logs, runner.hud;"
        "print(sorted(m for m in ('docker', 'requests', 'urllib3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
