ALTER TABLE users DROP CONSTRAINT users_handle_lowercase;
