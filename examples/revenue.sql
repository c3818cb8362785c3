-- weft demo: revenue per region, kept up to date incrementally as orders change.
DROP VIEW IF EXISTS top_orders;
DROP VIEW IF EXISTS revenue;
DROP TABLE IF EXISTS orders;
DROP TABLE IF EXISTS customers;

CREATE TABLE orders (id BIGINT PRIMARY KEY, customer TEXT, amount DOUBLE);
CREATE TABLE customers (name TEXT PRIMARY KEY, region TEXT);

CREATE MATERIALIZED VIEW revenue AS
  SELECT c.region, sum(o.amount) AS total, count(*) AS n
  FROM orders o JOIN customers c ON o.customer = c.name
  GROUP BY c.region;

CREATE MATERIALIZED VIEW top_orders AS
  SELECT id, customer, amount FROM orders ORDER BY amount DESC LIMIT 2;

INSERT INTO customers VALUES ('ada', 'north'), ('bob', 'south'), ('cy', 'north');
INSERT INTO orders VALUES (1, 'ada', 10.0), (2, 'bob', 5.5), (3, 'cy', 7.25);
SELECT * FROM revenue ORDER BY region;

UPDATE orders SET amount = 12 WHERE id = 1;
DELETE FROM orders WHERE id = 2;
SELECT * FROM revenue ORDER BY region;
SELECT * FROM top_orders ORDER BY amount DESC;

BEGIN;
INSERT INTO orders VALUES (4, 'bob', 30.0);
UPDATE customers SET region = 'west' WHERE name = 'bob';
COMMIT;
SELECT * FROM revenue ORDER BY region;

EXPLAIN SELECT c.region, sum(o.amount) AS total, count(*) AS n
  FROM orders o JOIN customers c ON o.customer = c.name
  GROUP BY c.region;
