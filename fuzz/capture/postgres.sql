CREATE TABLE scalars (
  id int8 PRIMARY KEY, b bool, i2 int2, i4 int4, o oid, f4 float4, f8 float8,
  n numeric(12,3), n0 numeric(38,0), t text, j jsonb, by bytea, d date, tm time,
  ts timestamp, tz timestamptz, u uuid
);
INSERT INTO scalars VALUES
 (1, true, -32768, 2147483647, 4294967295, 1.5, -2.25e300, -123456789.123, 99999999999999999999999999999999999999,
  'héllo, "world"', '{"a": [1, 2, {"b": null}]}', '\xdeadbeef00', '2024-02-29', '13:45:30.123456',
  '2024-02-29 13:45:30.123456', '2024-02-29 13:45:30.123456+02', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
 (2, false, 0, 0, 0, 'NaN', 'Infinity', 0.001, 0, '', '[]', '\x', '0001-01-01 BC', '24:00:00',
  'infinity', '-infinity', '00000000-0000-0000-0000-000000000000'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, true, 7, -7, 26, -0.0, 5e-324, -0.5, -1, E'line\nbreak\ttab', '"s"', '\x00ff', '5874897-12-31', '00:00:00',
  '4714-11-24 00:00:00 BC', '1999-12-31 23:59:59.999999+00', 'ffffffff-ffff-ffff-ffff-ffffffffffff');
CREATE TABLE arrays (
  id int4 PRIMARY KEY, ai int4[], at text[], am int8[][], an numeric(6,2)[], ad date[], ats timestamptz[], ab bytea[], au uuid[]
);
INSERT INTO arrays VALUES
 (1, '{1,NULL,3}', '{"x","y, z",NULL,"q\"uote","back\\slash"}', '{{1,2},{3,4}}', '{1.5,-2.25,NULL}', '{2024-01-01,infinity}',
  '{"2024-01-01 00:00:00+00",NULL}', '{"\\x0102",NULL}', '{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}'),
 (2, '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, '[0:1]={5,-6}', '{""}', '{{{1}},{{2}}}', '{0}', '{-infinity}', '{infinity}', '{"\\x"}', '{}');
CREATE TABLE wide (id int4 PRIMARY KEY, payload text, amount numeric(12,2), at timestamptz);
INSERT INTO wide SELECT g, repeat(md5(g::text), 1 + g % 3), g * 1.25, '2024-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 40) g;
CREATE TABLE notnull_later (id int4 PRIMARY KEY, v text);
INSERT INTO notnull_later VALUES (1, NULL), (2, 'two');
