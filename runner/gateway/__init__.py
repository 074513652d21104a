"""Host-side network services of a run: the model gateway and the egress allowlist proxy."""
