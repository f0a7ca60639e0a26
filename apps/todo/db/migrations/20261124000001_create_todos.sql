CREATE TABLE todos (
  id serial PRIMARY KEY,
  title text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
  done boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tags (
  id serial PRIMARY KEY,
  name text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9-]{1,32}$')
);
CREATE TABLE todo_tags (
  todo_id integer NOT NULL REFERENCES todos ON DELETE CASCADE,
  tag_id integer NOT NULL REFERENCES tags ON DELETE CASCADE,
  PRIMARY KEY (todo_id, tag_id)
);
-- migrate:down
DROP TABLE todo_tags;
DROP TABLE tags;
DROP TABLE todos;
