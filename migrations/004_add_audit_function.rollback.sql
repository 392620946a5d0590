DROP TRIGGER IF EXISTS users_touch_updated_at ON users;
DROP FUNCTION IF EXISTS touch_updated_at();
ALTER TABLE users DROP COLUMN IF EXISTS updated_at;
