"""poststack: keeps a PostgreSQL database's migration history honest."""

__version__ = "0.1.0"
