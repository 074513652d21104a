"""The process's open-file limit, raised to what the system allows.

A supervisor holds the agent's gateway and proxy connections, its journal, the engine's sockets and
git's pipes; the common soft default of 1024 descriptors is within reach of an agent that floods the
gateway's socket, and running out would stop the supervisor writing its journal. The hard limit is
ours to take without privilege.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger(__name__)


def raise_open_file_limit() -> int:
    """Set the soft RLIMIT_NOFILE to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard in (resource.RLIM_INFINITY, soft):  # infinity is no number to set the soft limit to
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.debug("open-file limit stays %d: %s", soft, exc)
        return soft
    return hard
