-- poststack:no-transaction
-- Built concurrently so a large users table stays writable during the build. No IF NOT
-- EXISTS: then the index's existence shows this migration ran (and a failed build leaves
-- an INVALID index that poststack db diagnose reports).
CREATE INDEX CONCURRENTLY users_created_at_idx ON users (created_at);
