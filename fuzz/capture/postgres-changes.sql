-- Changes whose pgoutput messages become the `pgoutput` corpus (run after postgres.sql, with
-- the publication and slot of capture-corpus).
ALTER TABLE arrays REPLICA IDENTITY FULL;
INSERT INTO scalars SELECT id + 10, b, i2, i4, o, f4, f8, n, n0, t, j, by, d, tm, ts, tz, u FROM scalars;
UPDATE scalars SET t = 'changed', n = 1.5 WHERE id = 11;
UPDATE scalars SET id = 100 WHERE id = 12;
DELETE FROM scalars WHERE id = 13;
INSERT INTO arrays SELECT id + 10, ai, at, am, an, ad, ats, ab, au FROM arrays;
UPDATE arrays SET ai = '{9}' WHERE id = 11;
DELETE FROM arrays WHERE id = 14;
CREATE TYPE mood AS ENUM ('sad', 'ok');
CREATE TABLE moods (id int PRIMARY KEY, m mood, r int4range);
INSERT INTO moods VALUES (1, 'ok', '[1,5)'), (2, NULL, 'empty');
BEGIN; INSERT INTO wide VALUES (1000, 'x', 1, now()); SELECT pg_logical_emit_message(true, 'fuzz', 'hello'); COMMIT;
SELECT pg_logical_emit_message(false, 'fuzz-nt', '\x00ff'::bytea);
TRUNCATE notnull_later;
