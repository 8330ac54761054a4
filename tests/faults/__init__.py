"""The fault suite: the whole local pack under faults, every accepted scan audited (`python -m tests.faults`)."""
