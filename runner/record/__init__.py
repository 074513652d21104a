"""The record: what the harness keeps on the host and reads back.

The journal's pydantic models and files, the settings (config file and environment), and the user's repository
as host git sees it (`gitops`). It may import `runner.base` only.
"""
