-- Data migration: handles are case-insensitive from now on.
UPDATE users SET handle = lower(handle) WHERE handle <> lower(handle);
ALTER TABLE users ADD CONSTRAINT users_handle_lowercase CHECK (handle = lower(handle));
