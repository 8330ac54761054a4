"""The functions' bodies, one module per function: `functions/<name>/main.py` serves `eco2.functions.<name>`."""
