"""`python -m eco2_tools.ha up|down|env`."""

from eco2_tools.ha.cli import commands

commands()()
