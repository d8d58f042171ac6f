-- Sample data for scripts/demo: a small shop. Recreated on every run.
DROP TABLE IF EXISTS order_items, orders, customers, products, audit_log;
DROP TYPE IF EXISTS order_status;

CREATE TYPE order_status AS ENUM ('placed', 'paid', 'shipped', 'delivered', 'cancelled');

CREATE TABLE customers (
    id         bigint PRIMARY KEY,
    email      text NOT NULL UNIQUE,
    full_name  text NOT NULL,
    country    char(2),
    created_at timestamptz NOT NULL,
    tags       text[],
    profile    jsonb
);
CREATE TABLE products (
    id         integer PRIMARY KEY,
    sku        varchar(32) NOT NULL,
    name       text NOT NULL,
    price      numeric(10,2) NOT NULL,
    image      bytea
);
CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers,
    status      order_status NOT NULL,
    ordered_on  date NOT NULL,
    ordered_at  timestamp NOT NULL,
    total       numeric(12,2) NOT NULL,
    external_id uuid
);
CREATE TABLE order_items (
    order_id   bigint NOT NULL REFERENCES orders,
    line       smallint NOT NULL,
    product_id integer NOT NULL REFERENCES products,
    quantity   integer NOT NULL,
    PRIMARY KEY (order_id, line)
);
-- Excluded by the demo task's rules (public.audit_%).
CREATE TABLE audit_log (id bigserial PRIMARY KEY, message text);

INSERT INTO customers
SELECT g,
       'customer' || g || '@example.com',
       'Customer ' || g,
       (ARRAY['FR','DE','US','JP','BR'])[g % 5 + 1],
       timestamptz '2023-01-01 00:00:00+00' + g * interval '37 minutes',
       CASE WHEN g % 3 = 0 THEN ARRAY['vip'] WHEN g % 7 = 0 THEN NULL ELSE ARRAY[]::text[] END,
       jsonb_build_object('newsletter', g % 2 = 0, 'score', g % 100)
FROM generate_series(1, 20000) g;

INSERT INTO products
SELECT g, 'SKU-' || lpad(g::text, 6, '0'), 'Product ' || g, round((5 + (g * 7.31) % 500)::numeric, 2),
       CASE WHEN g % 10 = 0 THEN decode(md5(g::text), 'hex') END
FROM generate_series(1, 500) g;

INSERT INTO orders
SELECT g,
       g % 20000 + 1,
       (ARRAY['placed','paid','shipped','delivered','cancelled']::order_status[])[g % 5 + 1],
       date '2024-01-01' + (g % 365),
       timestamp '2024-01-01 08:00:00' + g * interval '97 seconds',
       round((10 + (g * 13.37) % 990)::numeric, 2),
       md5(g::text)::uuid
FROM generate_series(1, 200000) g;

INSERT INTO order_items
SELECT o, l, (o * l) % 500 + 1, (o + l) % 4 + 1
FROM generate_series(1, 200000) o, generate_series(1, 3) l;

INSERT INTO audit_log (message) SELECT 'event ' || g FROM generate_series(1, 100) g;
ANALYZE;
