-- weft demo: managed effects with files only (no servers needed). A source follows a glob of
-- JSON-lines files; a view aggregates it; sinks write the view's changes, exactly once, as JSON
-- lines, CSV and Parquet; weft.effects shows every effect.
-- Run from the repository root: cargo run --release -- run examples/effects.sql
DROP SINK IF EXISTS per_user_jsonl;
DROP SINK IF EXISTS per_user_parquet;
DROP VIEW IF EXISTS per_user;
DROP SOURCE IF EXISTS clicks;

CREATE SOURCE clicks FROM files('examples/data/clicks/*.jsonl') WITH (poll_ms = 100);
SELECT * FROM clicks ORDER BY user, page;

CREATE MATERIALIZED VIEW per_user AS
  SELECT user, count(*) AS clicks, avg(ms) AS avg_ms FROM clicks GROUP BY user;
SELECT * FROM per_user ORDER BY user;

CREATE SINK per_user_jsonl FROM per_user INTO files('weft-out/per_user.jsonl') KEY (user);
CREATE SINK per_user_parquet FROM per_user INTO files('weft-out/per_user.parquet');

-- Every mutation effect: its CID (the idempotency key), status, attempts and signed receipt.
SELECT name, sequence, status, rows, receipt FROM weft.effects WHERE stream = 'mutation' ORDER BY name, sequence;
-- The source's reads are query effects.
SELECT stream, connector, resource, status FROM weft.effects WHERE stream = 'query';
