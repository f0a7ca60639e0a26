/*
 * httpc.h - the outbound HTTP/1.1 client behind rage.http (lua/rage/http.lua).
 *
 * One exchange is one request and its response on a connection taken from a per-origin
 * keep-alive pool or opened for it (DNS with a short cache, TCP, TLS through tls.h). The Lua
 * wrapper builds the request head; this module sends it, parses the response with llhttp in
 * response mode (no lenient flag, plus the size, count and framing checks llhttp leaves out) and
 * hands the status, headers and body back to the calling fiber. Every wait follows the suspend
 * protocol of sched.h; a cancelled exchange closes its connection, which is never pooled again.
 *
 * The pool and the caches belong to the Lua state (one per runtime): rage__httpc_open()
 * anchors them in the registry and they are freed when the state closes. Idle pooled
 * connections keep their libuv handles, unreferenced (they keep no loop running); closing the
 * state closes them, and the runtime's last loop pass completes that.
 *
 * The defaults and limits are the RAGE_HTTPC_* values of config.h. The implementation is
 * httpc.c (exchanges and these bindings), httpc_pool.c and httpc_parse.c; httpc_internal.h
 * declares what they share.
 */
#ifndef RAGE_HTTPC_H
#define RAGE_HTTPC_H

#include <lua.h>

/* Creates the client state of this Lua state and the metatable of exchange objects. `rt` is
 * the runtime, the upvalue of the methods. */
void rage__httpc_open(lua_State *L, void *rt);

/*
 * core.http_request(params): starts an exchange and suspends until the response head arrives.
 * params: host, port, tls, verify, ca_file, head (request head bytes), body, method_head,
 * idempotent, stream, keepalive (false when the request asked the server to close),
 * connect_timeout, headers_timeout, idle_timeout, total_timeout (seconds, false for none),
 * max_header_size, max_headers, max_body (false for none).
 * Returns exchange, status, headers[, body] (body when the whole response is already there and
 * not streamed), or nil, kind, message[, phase]. Upvalue 1 is the runtime.
 *
 * exchange:read_all() -> body | nil, kind, message[, phase]     (may suspend)
 * exchange:read()     -> chunk | false at the end | nil, kind, message[, phase] (may suspend)
 * exchange:close()    -> closes the connection unless the response was complete
 */
int rage__httpc_lua_request(lua_State *L);

/* core.http_configure{max_idle_per_origin=, max_idle=, idle_timeout=, dns_ttl=}: pool settings
 * (times in seconds). Returns nothing. */
int rage__httpc_lua_configure(lua_State *L);

/* core.http_stats() -> {idle =, opened =, reused =, retried =, dns_lookups =, dns_hits =} */
int rage__httpc_lua_stats(lua_State *L);

/* core.http_close_idle(): closes every idle pooled connection. */
int rage__httpc_lua_close_idle(lua_State *L);

#endif /* RAGE_HTTPC_H */
