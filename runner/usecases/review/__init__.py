"""The review of a session's branch: what it would change in the user's tree and what of it needs care
(`findings`), and that review kept in the session's journal while its inputs are unchanged (`cache`).

`diff` and `merge` (runner/usecases/merge.py) review afresh; `status`, `list`, `hud` and `report` show
the cached review.
"""
