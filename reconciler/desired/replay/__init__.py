"""Replay: the history run in a shadow database, with PostgreSQL's own catalog read after each
migration, so that what each migration does is known from the server, not from the text."""
