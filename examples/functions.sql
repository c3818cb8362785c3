-- weft demo: pure Wasm functions in a view, memoised by invocation CID, with provenance in SQL.
-- Run from the repository root: cargo run --release -- run examples/functions.sql
DROP VIEW IF EXISTS labelled;
DROP TABLE IF EXISTS items;
DROP FUNCTION IF EXISTS add_one;
DROP FUNCTION IF EXISTS slugify;

CREATE FUNCTION add_one(BIGINT) RETURNS BIGINT LANGUAGE wasm AS 'examples/wasm/math.wat';
CREATE FUNCTION slugify(TEXT) RETURNS TEXT LANGUAGE wasm AS 'examples/wasm/text.wat' EXPORT 'slug'
  WITH (fuel = 1000000, memory_mb = 16);

CREATE TABLE items (id BIGINT PRIMARY KEY, stock BIGINT, title TEXT);
CREATE MATERIALIZED VIEW labelled AS
  SELECT id, add_one(stock) AS next_stock, slugify(title) AS slug FROM items;

INSERT INTO items VALUES (1, 10, 'Blue Chair'), (2, 10, 'Red Table'), (3, 4, 'Blue Chair');
SELECT * FROM labelled ORDER BY id;

-- Only new argument values run; everything else is a memo hit.
UPDATE items SET stock = 11 WHERE id = 1;
SELECT * FROM labelled ORDER BY id;

SELECT * FROM weft.functions ORDER BY name;
SELECT i.func, i.args, r.out, r.fuel
  FROM weft.receipts r JOIN weft.invocations i ON r.ran = i.cid
  ORDER BY i.func, i.args;
SELECT receipts FROM weft.memo_stats;
