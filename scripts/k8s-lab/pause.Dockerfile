# The kubelet's pod sandbox ("pause") image, built locally: `docker pull` does not work here.
# It only holds the pod's namespaces; it exits at once on SIGTERM so pods stop without a grace wait.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
CMD ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
