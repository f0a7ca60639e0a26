-- The benchmark database, loaded by bench/run into its throwaway PostgreSQL.
--
-- W2, W3: worlds, 10,000 rows with random numbers in 1..10,000.
-- W5: 1,000 accounts with 20 items each; GET /accounts/:id/items answers one account's items
-- with one indexed query.

CREATE TABLE worlds (id int PRIMARY KEY, randomnumber int NOT NULL);
INSERT INTO worlds (id, randomnumber)
  SELECT i, 1 + floor(random() * 10000)::int FROM generate_series(1, 10000) AS i;

CREATE TABLE accounts (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO accounts (id, name) SELECT i, 'account ' || i FROM generate_series(1, 1000) AS i;

CREATE TABLE items (
  id int PRIMARY KEY,
  account_id int NOT NULL REFERENCES accounts (id),
  title text NOT NULL,
  price int NOT NULL
);
INSERT INTO items (id, account_id, title, price)
  SELECT i, 1 + (i - 1) / 20, 'item ' || i, 100 + (i * 7919) % 10000 FROM generate_series(1, 20000) AS i;
CREATE INDEX items_account_id ON items (account_id, id);

ANALYZE;
