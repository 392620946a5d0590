-- An enum value cannot be removed again: this migration has no rollback file.
ALTER TYPE order_status ADD VALUE 'refunded';
