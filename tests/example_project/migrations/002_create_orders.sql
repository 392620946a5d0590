CREATE TYPE order_status AS ENUM ('new', 'paid');

CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    status order_status NOT NULL DEFAULT 'new',
    total_cents integer NOT NULL CHECK (total_cents >= 0)
);
CREATE INDEX orders_user_id_idx ON orders (user_id);
