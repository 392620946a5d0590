"""Playbooks rendered into plans, and the one executor that runs them."""
