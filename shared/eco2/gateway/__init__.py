"""The gateway: the mobile API (submit, result, SSE, cancel, categories) in front of the function pack."""
