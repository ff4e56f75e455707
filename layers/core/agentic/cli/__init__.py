"""``agentic``: the command-line client (submit, watch, list, status, task controls)."""
