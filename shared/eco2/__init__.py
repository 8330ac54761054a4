"""Eco² function pack: the common library every function imports."""
