'use strict';
// bench/run's Node.js peer: node:http and node-postgres (npm `pg`, a Pool of 10), answering the
// same routes as every server: /json (W1), /db (W2), /queries?queries=N (W3), /wait (W4) and
// /accounts/:id/items (W5). PORT, DATABASE_URL and WORKERS come from the environment; with
// WORKERS > 1 the primary forks that many workers with node:cluster.

const cluster = require('node:cluster');
const http = require('node:http');

const PORT = Number(process.env.PORT);
const WORKERS = Number(process.env.WORKERS || 1);
const HOST = process.env.HOST || '127.0.0.1';

if (!PORT) {
  console.error('node peer: PORT is required');
  process.exit(2);
}

if (WORKERS > 1 && cluster.isPrimary) {
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  let stopping = false;
  cluster.on('exit', (worker, code) => {
    if (!stopping) console.error(`node peer: worker ${worker.process.pid} exited (${code})`);
    if (Object.keys(cluster.workers).length === 0) process.exit(0);
  });
  const stop = () => {
    stopping = true;
    for (const id in cluster.workers) cluster.workers[id].process.kill('SIGTERM');
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  serve();
}

function serve() {
  const { Pool } = require('pg');
  const pool = process.env.DATABASE_URL
    ? new Pool({ connectionString: process.env.DATABASE_URL, max: 10 })
    : null;

  const WORLD = 'SELECT id, randomnumber FROM worlds WHERE id = $1';
  const ITEMS = 'SELECT id, title, price FROM items WHERE account_id = $1 ORDER BY id LIMIT 20';
  const HELLO = { message: 'Hello, World!' };

  const randomId = () => 1 + Math.floor(Math.random() * 10000);

  function send(res, status, value) {
    const body = value === undefined ? '' : JSON.stringify(value);
    res.writeHead(status, {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(body);
  }

  async function world() {
    return (await pool.query(WORLD, [randomId()])).rows[0];
  }

  // The W5 "before_action": the account id from the path, or null (404).
  function findAccount(param) {
    const id = Number(param);
    return Number.isInteger(id) && id >= 1 && id <= 1000 ? id : null;
  }

  const ITEMS_PATH = /^\/accounts\/([^/]+)\/items$/;

  async function handle(req, res) {
    const q = req.url.indexOf('?');
    const path = q < 0 ? req.url : req.url.slice(0, q);
    if (req.method !== 'GET') return send(res, 404);
    if (path === '/json') return send(res, 200, HELLO);
    if (path === '/wait') {
      await new Promise((resolve) => setTimeout(resolve, 10));
      return send(res, 200, HELLO);
    }
    if (!pool && (path === '/db' || path === '/queries' || ITEMS_PATH.test(path))) {
      return send(res, 503, { error: 'no database: set DATABASE_URL' });
    }
    if (path === '/db') return send(res, 200, await world());
    if (path === '/queries') {
      const params = new URLSearchParams(q < 0 ? '' : req.url.slice(q + 1));
      let n = Math.floor(Number(params.get('queries')) || 1);
      n = Math.min(Math.max(n, 1), 500);
      const worlds = [];
      for (let i = 0; i < n; i++) worlds.push(await world());
      return send(res, 200, worlds);
    }
    const m = ITEMS_PATH.exec(path);
    if (m) {
      const account = findAccount(m[1]);
      if (account === null) return send(res, 404);
      return send(res, 200, (await pool.query(ITEMS, [account])).rows);
    }
    return send(res, 404);
  }

  const server = http.createServer((req, res) => {
    handle(req, res).catch((err) => {
      console.error(err);
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
    });
  });
  // W6 holds idle keep-alive connections open during a W1 run: keep them as long as the peers.
  server.keepAliveTimeout = 300 * 1000;
  server.headersTimeout = 60 * 1000;
  server.listen(PORT, HOST);

  const stop = () => {
    server.close();
    server.closeAllConnections();
    (pool ? pool.end() : Promise.resolve()).finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
