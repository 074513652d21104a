# The harness itself, for a host without a suitable Python. `docker run` of this image drives the host's
# Docker engine through its socket, so the repository and the harness's home must be mounted at the SAME
# paths as on the host (the runner makes bind mounts by host path): see docs/container.md.
#
#   docker build -t harness .
#   behind a TLS-intercepting proxy: docker build --build-arg EXTRA_CA="$(cat /path/to/proxy-ca.crt)" -t harness .
#
# Built FROM the locally bootstrapped debian:bookworm-slim (nothing is pulled); pip reaches PyPI during the
# build. One stage: the legacy builder would leave an earlier stage behind as an unlabelled image.
FROM debian:bookworm-slim

ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv git ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

# A proxy's CA certificate (PEM text; certificates are public), added to the system bundle that pip is
# pointed at below (pip's own bundle does not know it). Not to /usr/local/share/ca-certificates: what the
# runner finds there goes into the harness's images, and that must be the host's (mounted, docs/container.md).
ARG EXTRA_CA=""
RUN if [ -n "$EXTRA_CA" ]; then printf '%s\n' "$EXTRA_CA" >> /etc/ssl/certs/ca-certificates.crt; fi
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# Refuse to start without a harness home that is a mounted host directory: a home inside this container
# would hold copies that the agent's containers (started by the host's engine) cannot see.
RUN printf '%s\n' \
      '#!/bin/sh' \
      'case "$1" in ""|-h|--help|--show-completion|--install-completion) exec harness "$@" ;; esac' \
      'if [ -z "$HARNESS_HOME" ] || [ ! -d "$HARNESS_HOME" ]; then' \
      '  echo "harness: error: HARNESS_HOME must name a host directory mounted at the same path (-v \"\$DIR:\$DIR\" -e HARNESS_HOME=\"\$DIR\"); see docs/container.md" >&2' \
      '  exit 2' \
      'fi' \
      'exec harness "$@"' \
      > /usr/local/bin/harness-in-container \
 && chmod 0755 /usr/local/bin/harness-in-container

# The dependencies (and the wheel's build backend) first: a change of the sources alone reuses this layer.
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; print(*tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /tmp/requirements.txt \
 && python3 -m venv /opt/harness && /opt/harness/bin/pip install -q -r /tmp/requirements.txt \
 && python3 -m venv /opt/build && /opt/build/bin/pip install -q hatchling \
 && rm /tmp/requirements.txt /tmp/pyproject.toml

# The harness's wheel, built from the sources and installed; the sources are not kept.
COPY pyproject.toml README.md /tmp/src/
COPY runner /tmp/src/runner
COPY images /tmp/src/images
RUN /opt/build/bin/pip wheel -q --no-deps --no-build-isolation --wheel-dir /tmp/wheels /tmp/src \
 && /opt/harness/bin/pip install -q --no-deps /tmp/wheels/*.whl \
 && rm -rf /tmp/src /tmp/wheels

# Run it as your own uid with the socket's group (--user, --group-add): the files it writes are yours.
ENV PATH=/opt/harness/bin:$PATH HOME=/tmp
LABEL io.solo-harness.image="runner"
ENTRYPOINT ["/usr/local/bin/harness-in-container"]
