"""Lint: what a migration will lock and rewrite, measured, and what the SQL alone shows."""
