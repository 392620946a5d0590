CREATE VIEW order_totals AS
    SELECT user_id, sum(total_cents) AS total_cents
    FROM orders
    GROUP BY user_id;

CREATE FUNCTION order_count(p_user bigint) RETURNS integer
    LANGUAGE sql STABLE
    AS $$ SELECT count(*)::integer FROM orders WHERE user_id = p_user $$;
