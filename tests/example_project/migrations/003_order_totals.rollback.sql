DROP FUNCTION order_count(bigint);
DROP VIEW order_totals;
