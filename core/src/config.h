/*
 * config.h - compile-time limits and defaults of the rage-lua core, in one place.
 *
 * Runtime settings (rage_server_config_t) start from these values; an app's
 * config/application.lua and the host may change them. The numbers follow
 * shared/RELIABILITY.md: what nginx, h2o, Puma and Node promise by default.
 */
#ifndef RAGE_CONFIG_H
#define RAGE_CONFIG_H

#define RAGE_DEFAULT_MAX_REQUEST_LINE (8 * 1024)
#define RAGE_DEFAULT_MAX_HEADER_SIZE (16 * 1024)
#define RAGE_DEFAULT_MAX_HEADERS 100
#define RAGE_DEFAULT_MAX_BODY (1024 * 1024)
#define RAGE_DEFAULT_BODY_BUFFER (64 * 1024)
/* The most bytes one box:body_read() call returns (a multipart parser reads in chunks). */
#define RAGE_BODY_READ_MAX (1024 * 1024)
#define RAGE_DEFAULT_MAX_CHUNK_EXT (16 * 1024)
#define RAGE_DEFAULT_HEADER_TIMEOUT 20000
#define RAGE_DEFAULT_BODY_IDLE_TIMEOUT 30000
#define RAGE_DEFAULT_REQUEST_TIMEOUT 300000
#define RAGE_DEFAULT_KEEPALIVE_TIMEOUT 65000
#define RAGE_DEFAULT_MAX_REQUESTS 1000
#define RAGE_DEFAULT_SEND_TIMEOUT 60000
#define RAGE_DEFAULT_OUTPUT_HIGH_WATER (1024 * 1024)
#define RAGE_DEFAULT_MAX_CONNECTIONS 10000
#define RAGE_DEFAULT_DRAIN_TIMEOUT 30000

/* When this many connections are open (a fraction of max_connections, in percent), idle
 * keep-alive connections get a shorter timeout so that new clients are not turned away. */
#define RAGE_KEEPALIVE_PRESSURE_PCT 80
#define RAGE_KEEPALIVE_PRESSURE_TIMEOUT 5000

/* Read buffer of a connection. It is taken from a per-loop free list only while a request head
 * is incomplete or pipelined bytes wait; idle connections hold none. It must hold a whole
 * request head: the request line and header limits plus the syntax around them. */
#define RAGE_READ_BUFFER_SIZE (32 * 1024)
#define RAGE_READ_BUFFER_POOL 64

/* Bytes of pipelined input buffered while a request runs; past it, reading pauses. */
#define RAGE_PIPELINE_HIGH_WATER (32 * 1024)

/* The Lua collector's pause (percent): a cycle starts when the heap reaches this share of what
 * the last one left alive. A longer pause marks the live heap less often and saves instructions,
 * but spreads each request's garbage over more memory: at 300% with room for 8 MiB of garbage,
 * bench/apps/full's heap grew to ~12 MiB and a W1 request took ~0.3 µs more user CPU than at
 * 200%, where the heap stays near 2 MiB and in the CPU's cache (bench/RESULTS.md, "The
 * collector's pause"). 200 is Lua's own default. */
#define RAGE_GC_PAUSE 200

/* After the last response of a connection, input is read and dropped for at most this long
 * (milliseconds) so that a reset cannot destroy responses the client has not read. */
#define RAGE_LINGER_TIMEOUT 2000
/* The same bound while the server drains for shutdown. */
#define RAGE_LINGER_DRAIN_TIMEOUT 200

/* Fibers kept for reuse. More are created on demand and freed when the pool is full. */
#define RAGE_FIBER_POOL_MAX 1024

/* rage.sleep's queues, one per duration (timer.c): past this many, the empty ones are closed
 * before another is made. */
#define RAGE_SLEEP_QUEUES_MAX 64

/* Per-request arena: the first block is embedded in the request, larger ones are malloc'd. */
#define RAGE_ARENA_BLOCK 1024

/* ---- HTTP client (httpc.c, rage.http) ----------------------------------------------------- */

/* Defaults of an exchange; each can be changed per request. Times in milliseconds. */
#define RAGE_HTTPC_CONNECT_TIMEOUT 10000       /* DNS, TCP connect and TLS handshake */
#define RAGE_HTTPC_HEADERS_TIMEOUT 30000       /* request sent to complete response head */
#define RAGE_HTTPC_IDLE_TIMEOUT 30000          /* between two reads */
#define RAGE_HTTPC_TOTAL_TIMEOUT 120000        /* the whole exchange */
#define RAGE_HTTPC_MAX_HEADER_SIZE (32 * 1024)
#define RAGE_HTTPC_MAX_HEADERS 100
#define RAGE_HTTPC_MAX_BODY (16 * 1024 * 1024) /* buffered bodies; streamed ones are unlimited */

/* Defaults of the keep-alive pool and the DNS cache; each can be changed with
 * rage.http.configure(). Times in milliseconds. */
/* Idle connections kept per origin: as many as in all (Node's http.Agent keeps 256 too), so that
 * a burst of concurrent calls to one upstream finds its connections again instead of closing
 * all but a few and connecting anew. */
#define RAGE_HTTPC_POOL_PER_ORIGIN 256
#define RAGE_HTTPC_POOL_TOTAL 256 /* idle connections kept in all */
#define RAGE_HTTPC_POOL_IDLE 30000    /* an idle connection older than this is closed */
#define RAGE_HTTPC_DNS_TTL 5000       /* how long a resolved name is reused */

/* Fixed limits of the client. */
#define RAGE_HTTPC_DNS_CACHE 64                   /* names kept */
#define RAGE_HTTPC_MAX_ADDRS 4                    /* addresses kept and tried per name */
#define RAGE_HTTPC_MAX_CHUNK_EXT (16 * 1024)      /* chunk extension bytes in one chunk */
#define RAGE_HTTPC_STREAM_HIGH_WATER (256 * 1024) /* unread streamed bytes before reading pauses */
/* Bytes of one socket read, and of the decrypted TLS bytes taken from it at a time: two buffers
 * of this size per runtime, shared by all its exchanges. */
#define RAGE_HTTPC_READ_SIZE (64 * 1024)

#endif /* RAGE_CONFIG_H */
