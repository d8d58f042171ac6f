CREATE TABLE nums (
  id int PRIMARY KEY, t tinyint, tu tinyint unsigned, s smallint, m mediumint, mu mediumint unsigned,
  iu int unsigned, b bigint, bu bigint unsigned, f float, d double, dec1 decimal(12,3), dec2 decimal(65,10),
  b1 bit(1), b12 bit(12), b64 bit(64), y year
) CHARSET utf8mb4;
INSERT INTO nums VALUES
 (1, -128, 255, -32768, -8388608, 16777215, 4294967295, -9223372036854775808, 18446744073709551615, 1.5, -2.25e300,
  -123456789.123, 12345678901234567890123456789012345678901234567890.0123456789, 1, 4095, 18446744073709551615, 2155),
 (2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE nums SET t = 5, dec1 = 1.5 WHERE id = 2;
DELETE FROM nums WHERE id = 3;
CREATE TABLE texts (
  id int PRIMARY KEY, v varchar(40) CHARSET utf8mb4, c char(5) CHARSET latin1, a varchar(10) CHARSET ascii,
  vb varbinary(20), bl blob, tx text CHARSET utf8mb4, e enum('red','green','blue'), st set('a','b','c'), j json
);
INSERT INTO texts VALUES
 (1, 'héllo 日本', 'cé€', 'plain', X'00ff10', X'deadbeef', 'long text', 'green', 'a,c', '{"a": [1, 2, {"b": null}], "c": "d"}'),
 (2, '', '', '', X'', X'', '', 'red', '', '[]'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE texts SET v = 'changed', j = '{"x": 1.5}' WHERE id = 1;
DELETE FROM texts WHERE id = 2;
CREATE TABLE times (
  id int PRIMARY KEY, d date, dt datetime(6), dt0 datetime, ts timestamp(3) NULL, ts0 timestamp NULL, t3 time(3), t0 time, t6 time(6)
);
INSERT INTO times VALUES
 (1, '2024-02-29', '2024-02-29 13:45:30.123456', '1000-01-01 00:00:00', '2024-02-29 13:45:30.123', '1970-01-01 00:00:01', '-838:59:59.000', '12:00:00', '-00:00:00.000001'),
 (2, '9999-12-31', '9999-12-31 23:59:59.999999', '2000-01-01 00:00:00', '2038-01-19 03:14:07.999', '2038-01-19 03:14:07', '838:59:59.999', '-01:02:03', '00:00:00'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
UPDATE times SET t3 = '-12:34:56.789' WHERE id = 1;
DELETE FROM times WHERE id = 3;
