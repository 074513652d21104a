"""The Kubernetes engine: each container of the harness a `batch/v1` Job on a cluster (docs/kubernetes.md).

`engine` is the engine (lifecycle and inventory), `job` the Job it submits, `transfer` the mounts moved in
and out of a pod as tar, `tunnel` the host's services over an exec stream, `api` what they share of the
cluster's API. These are the only modules that import the official `kubernetes` client; this one imports
nothing, so that naming the package costs no client.
"""
