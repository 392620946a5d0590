"""The diff between desired and observed: the issue catalogue, evidence, checks."""
