-- Sample data for scripts/demo, MariaDB side: the shop's payments and shipments, kept by
-- another service in another database. Recreated on every run.
DROP TABLE IF EXISTS payments, shipments;

CREATE TABLE payments (
    id         bigint PRIMARY KEY,
    order_id   bigint NOT NULL,
    amount     decimal(12,2) NOT NULL,
    currency   char(3) NOT NULL DEFAULT 'EUR',
    method     enum('card', 'transfer', 'wallet') NOT NULL,
    paid_at    timestamp(3) NOT NULL,
    refunded   bit(1) NOT NULL DEFAULT b'0'
);
CREATE TABLE shipments (
    id          bigint PRIMARY KEY,
    order_id    bigint NOT NULL,
    carrier     varchar(20) NOT NULL,
    weight_g    int unsigned,
    shipped_on  date,
    tracking    json
);

INSERT INTO payments (id, order_id, amount, method, paid_at, refunded)
SELECT seq, seq, round(5 + (seq * 37 % 2000) / 10, 2),
       elt(1 + seq % 3, 'card', 'transfer', 'wallet'),
       timestamp '2025-01-01 00:00:00' + INTERVAL seq * 17 MINUTE, seq % 50 = 0
FROM seq_1_to_4000;

INSERT INTO shipments
SELECT seq, seq, elt(1 + seq % 4, 'DHL', 'UPS', 'PostNL', 'GLS'), 100 + seq * 13 % 5000,
       date '2025-01-02' + INTERVAL seq DIV 20 DAY,
       json_object('code', concat('TRK', seq), 'parcels', 1 + seq % 3)
FROM seq_1_to_3000;
