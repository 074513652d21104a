"""The Docker engine: every container of the harness on this machine's Docker engine (the default).

`engine` is the engine, the only module that imports the docker SDK; `config` its configuration, which
imports nothing of it.
"""
