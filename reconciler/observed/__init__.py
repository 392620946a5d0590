"""What the database says: catalog, tracking, lock and audit tables, read-only."""
