"""Fleets: the same commands over many databases or tenant schemas, with one report."""
