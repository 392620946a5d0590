-- poststack:no-transaction
-- Built concurrently so a large users table stays writable during the build.
CREATE INDEX CONCURRENTLY IF NOT EXISTS users_created_at_idx ON users (created_at);
