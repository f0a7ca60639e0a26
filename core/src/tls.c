/*
 * tls.c - OpenSSL client sessions over memory BIOs (see tls.h).
 *
 * OpenSSL reports errors on a per-thread queue; every failure path here turns the queue into one
 * message and clears it, so that a stale entry never shows up in an unrelated later call.
 * Verification failures get their own message from the X509 verify result ("certificate has
 * expired", "hostname mismatch"), which says far more than the generic handshake failure.
 */
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <uv.h>

static void error_message(const char *what, char *err, size_t errlen) {
  unsigned long e = ERR_get_error();
  char reason[160] = "";
  if (e) ERR_error_string_n(e, reason, sizeof(reason));
  ERR_clear_error();
  snprintf(err, errlen, "%s%s%s", what, *reason ? ": " : "", reason);
}

SSL_CTX *rage__tls_ctx_new(const char *ca_file, char *err, size_t errlen) {
  ERR_clear_error();
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == NULL) {
    error_message("cannot create a TLS context", err, errlen);
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                   : SSL_CTX_set_default_verify_paths(ctx);
  if (ok != 1) {
    char what[300];
    snprintf(what, sizeof(what), "cannot load the CA certificates from %s",
             ca_file ? ca_file : "the system store");
    error_message(what, err, errlen);
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

static int is_ip_literal(const char *host) {
  unsigned char buf[16];
  return uv_inet_pton(AF_INET, host, buf) == 0 || uv_inet_pton(AF_INET6, host, buf) == 0;
}

int rage__tls_init(rage__tls_t *t, SSL_CTX *ctx, const char *host, int verify, char *err, size_t errlen) {
  ERR_clear_error();
  memset(t, 0, sizeof(*t));
  t->ssl = SSL_new(ctx);
  if (t->ssl == NULL) {
    error_message("cannot create a TLS session", err, errlen);
    return RAGE_TLS_ERROR;
  }
  t->rbio = BIO_new(BIO_s_mem());
  t->wbio = BIO_new(BIO_s_mem());
  if (t->rbio == NULL || t->wbio == NULL) {
    BIO_free(t->rbio);
    BIO_free(t->wbio);
    SSL_free(t->ssl);
    memset(t, 0, sizeof(*t));
    error_message("cannot create TLS buffers", err, errlen);
    return RAGE_TLS_ERROR;
  }
  /* An empty memory BIO reports "retry" rather than end of file. */
  BIO_set_mem_eof_return(t->rbio, -1);
  SSL_set_bio(t->ssl, t->rbio, t->wbio);
  SSL_set_connect_state(t->ssl);
  int ip = is_ip_literal(host);
  int ok = 1;
  if (!ip) ok = SSL_set_tlsext_host_name(t->ssl, host);
  if (verify) {
    SSL_set_verify(t->ssl, SSL_VERIFY_PEER, NULL);
    if (ok) {
      if (ip) ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host);
      else ok = SSL_set1_host(t->ssl, host);
    }
  } else {
    SSL_set_verify(t->ssl, SSL_VERIFY_NONE, NULL);
  }
  if (ok != 1) {
    error_message("cannot set the TLS peer name", err, errlen);
    rage__tls_free(t);
    return RAGE_TLS_ERROR;
  }
  return 0;
}

static int fail(rage__tls_t *t, int r, const char *what, char *err, size_t errlen) {
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    ERR_clear_error();
    return RAGE_TLS_AGAIN;
  }
  if (e == SSL_ERROR_ZERO_RETURN) {
    ERR_clear_error();
    return RAGE_TLS_EOF;
  }
  long vr = SSL_get_verify_result(t->ssl);
  if (vr != X509_V_OK && SSL_get_verify_mode(t->ssl) != SSL_VERIFY_NONE) {
    ERR_clear_error();
    snprintf(err, errlen, "certificate verification failed: %s", X509_verify_cert_error_string(vr));
    return RAGE_TLS_ERROR;
  }
  error_message(what, err, errlen);
  return RAGE_TLS_ERROR;
}

int rage__tls_handshake(rage__tls_t *t, char *err, size_t errlen) {
  ERR_clear_error();
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) return RAGE_TLS_OK;
  r = fail(t, r, "TLS handshake failed", err, errlen);
  return r == RAGE_TLS_EOF ? RAGE_TLS_ERROR : r;
}

void rage__tls_feed(rage__tls_t *t, const char *data, size_t len) {
  /* A memory BIO grows as needed; a write fails only when memory runs out. */
  while (len > 0) {
    int n = BIO_write(t->rbio, data, len > 1 << 30 ? 1 << 30 : (int)len);
    if (n <= 0) abort();
    data += n;
    len -= (size_t)n;
  }
}

int rage__tls_write(rage__tls_t *t, const char *data, size_t len, char *err, size_t errlen) {
  ERR_clear_error();
  while (len > 0) {
    int n = SSL_write(t->ssl, data, len > 1 << 30 ? 1 << 30 : (int)len);
    if (n <= 0) {
      int r = fail(t, n, "TLS write failed", err, errlen);
      return r == RAGE_TLS_ERROR ? r : RAGE_TLS_ERROR;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

int rage__tls_read(rage__tls_t *t, char *buf, size_t cap, char *err, size_t errlen) {
  ERR_clear_error();
  int n = SSL_read(t->ssl, buf, cap > 1 << 30 ? 1 << 30 : (int)cap);
  if (n > 0) return n;
  return fail(t, n, "TLS read failed", err, errlen);
}

size_t rage__tls_take_output(rage__tls_t *t, rage__buf_t *out) {
  size_t total = 0;
  for (;;) {
    size_t pending = BIO_ctrl_pending(t->wbio);
    if (pending == 0) return total;
    rage__buf_reserve(out, pending);
    int n = BIO_read(t->wbio, out->data + out->len, (int)pending);
    if (n <= 0) return total;
    out->len += (size_t)n;
    total += (size_t)n;
  }
}

void rage__tls_free(rage__tls_t *t) {
  if (t->ssl) SSL_free(t->ssl); /* frees both BIOs */
  memset(t, 0, sizeof(*t));
}
