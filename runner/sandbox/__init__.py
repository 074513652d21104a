"""The sandbox: what a container of the harness is made of, before any engine runs it.

The one recipe for a hardened container and its in-container paths (`container`), the harness images and the
images derived from the user's (`images`, `derive`, `devcontainer`), and the project environment a run
resolves (`environment`). It may import `runner.backends`, `runner.record` and `runner.base`.
"""
