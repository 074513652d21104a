"""The host's extra TLS trust: the CA certificates it added for a TLS-intercepting (corporate) proxy.

The harness's image builds copy them into the images (runner/sandbox/images.py, derive.py) and the model
gateway verifies its upstreams with them (runner/gateway/model.py): both ask here, so both trust the same.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from runner.base.seams import harness_env

if TYPE_CHECKING:
    import ssl

log = logging.getLogger(__name__)

# Locally added CA certificates: Debian's place for them, plus one env var.
HOST_EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")
EXTRA_CA_ENV = "HARNESS_EXTRA_CA_CERTS"


def extra_ca_files() -> list[Path]:
    files = sorted(HOST_EXTRA_CA_DIR.glob("*.crt")) if HOST_EXTRA_CA_DIR.is_dir() else []
    extra = harness_env().extra_ca_certs
    if extra:
        files += [Path(p) for p in extra.split(os.pathsep) if p]
    return [f for f in files if f.is_file()]


def ssl_context() -> ssl.SSLContext:
    """System trust plus the host's extra CA certificates."""
    import ssl  # only the gateway verifies TLS: the commands that build images need not load it

    context = ssl.create_default_context()
    for cert in extra_ca_files():
        try:
            context.load_verify_locations(cafile=str(cert))
        except (OSError, ssl.SSLError) as exc:
            log.warning("extra CA certificate %s not loaded: %s", cert, exc)
    return context
