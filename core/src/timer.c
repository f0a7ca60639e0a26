/*
 * timer.c - rage.sleep (see timer.h): the first suspending operation, and the model for all
 * the others.
 *
 * Sleeping fibers wait in queues, one per duration in milliseconds, each with a single libuv
 * timer set for its oldest sleeper (the scheme of Node's timer lists). Every fiber in a queue
 * slept for the same time, so appending keeps a queue in the order of due times: starting a
 * sleep, waking one and cancelling one are O(1), where a timer per sleep pays libuv's heap of all
 * of them (log n swaps on each start and each expiry: several hundred instructions a wait with
 * a few hundred fibers asleep). A queue's timer is armed while the queue has sleepers, so a
 * sleeping fiber keeps the loop running as before. Queues left empty are kept for reuse and
 * closed when there get to be too many of them.
 */
#include "timer.h"

#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>

#include "config.h"
#include "runtime.h"
#include "util.h"

typedef struct sleepq_s sleepq_t;

struct sleepq_s {
  uv_timer_t timer;
  uint64_t ms;
  rage__fiber_t *head, *tail;
  sleepq_t *next; /* in its hash bucket */
  rage__timers_t *timers;
  int closing;
};

#define BUCKETS 64 /* a power of two */

struct rage__timers_s {
  uv_loop_t *loop;
  sleepq_t *buckets[BUCKETS];
  unsigned nqueues;
  uint64_t seq; /* sleeps started so far */
};

rage__timers_t *rage__timers_new(uv_loop_t *loop) {
  rage__timers_t *t = rage__calloc(1, sizeof(*t));
  t->loop = loop;
  return t;
}

static void on_queue_closed(uv_handle_t *h) {
  free(h->data);
}

static void close_queue(sleepq_t *q) {
  q->timers->nqueues--;
  q->closing = 1;
  uv_close((uv_handle_t *)&q->timer, on_queue_closed);
}

void rage__timers_free(rage__timers_t *t) {
  /* Every sleeper was cancelled before (rage__sched_cancel_all), so the queues are empty. */
  for (unsigned i = 0; i < BUCKETS; i++) {
    while (t->buckets[i]) {
      sleepq_t *q = t->buckets[i];
      t->buckets[i] = q->next;
      close_queue(q);
    }
  }
  free(t);
}

/* Closes the queues that have no sleepers (called when a new one would exceed the limit). */
static void reap_empty(rage__timers_t *t) {
  for (unsigned i = 0; i < BUCKETS; i++) {
    sleepq_t **link = &t->buckets[i];
    while (*link) {
      sleepq_t *q = *link;
      if (q->head == NULL) {
        *link = q->next;
        close_queue(q);
      } else {
        link = &q->next;
      }
    }
  }
}

static void on_queue_timer(uv_timer_t *h);

static sleepq_t *queue_for(rage__timers_t *t, uint64_t ms) {
  sleepq_t **bucket = &t->buckets[ms & (BUCKETS - 1)];
  for (sleepq_t *q = *bucket; q; q = q->next)
    if (q->ms == ms) return q;
  if (t->nqueues >= RAGE_SLEEP_QUEUES_MAX) reap_empty(t);
  sleepq_t *q = rage__calloc(1, sizeof(*q));
  uv_timer_init(t->loop, &q->timer);
  q->timer.data = q;
  q->ms = ms;
  q->timers = t;
  q->next = *bucket;
  *bucket = q;
  t->nqueues++;
  return q;
}

static void unlink_sleeper(sleepq_t *q, rage__fiber_t *f) {
  if (f->sleep.prev) f->sleep.prev->sleep.next = f->sleep.next;
  else q->head = f->sleep.next;
  if (f->sleep.next) f->sleep.next->sleep.prev = f->sleep.prev;
  else q->tail = f->sleep.prev;
  f->sleep.prev = f->sleep.next = NULL;
  f->sleep.queue = NULL;
}

/* Sets the queue's timer for its oldest sleeper, or stops it when nobody sleeps there. */
static void arm(sleepq_t *q) {
  if (q->head == NULL) {
    uv_timer_stop(&q->timer);
    return;
  }
  uint64_t now = uv_now(q->timers->loop);
  uint64_t due = q->head->sleep.due;
  uv_timer_start(&q->timer, on_queue_timer, due > now ? due - now : 0, 0);
}

/* Wakes the sleepers that are due, oldest first. Only sleeps that began before this call are
 * woken by it, so a fiber looping on rage.sleep(0) wakes once per loop iteration, not forever
 * within this one. A woken fiber may close this queue (by starting a sleep that makes a new
 * one); the queue is freed only after this callback returns. */
static void on_queue_timer(uv_timer_t *h) {
  sleepq_t *q = h->data;
  uint64_t now = uv_now(q->timers->loop);
  uint64_t seq = q->timers->seq;
  while (q->head && q->head->sleep.due <= now && q->head->sleep.seq <= seq) {
    rage__fiber_t *f = q->head;
    unlink_sleeper(q, f);
    if (rage__fiber_waiting(f, f->sleep.gen)) {
      lua_pushboolean(f->L, 1);
      rage__fiber_resume(f, 1);
    }
  }
  if (!q->closing) arm(q);
}

static void on_cancel(rage__fiber_t *f, void *data) {
  (void)data;
  sleepq_t *q = f->sleep.queue;
  if (q == NULL) return;
  /* The queue's timer may stay set for this sleeper: it then fires, finds nobody due, and is
   * set again for the new oldest one. */
  unlink_sleeper(q, f);
  if (q->head == NULL) uv_timer_stop(&q->timer);
}

int rage__timer_lua_sleep(lua_State *L) {
  rage_runtime_t *rt = lua_touserdata(L, lua_upvalueindex(1));
  lua_Number seconds = luaL_checknumber(L, 1);
  rage__fiber_t *f = rage__fiber_current(rt->sched);
  if (f == NULL) return luaL_error(L, "rage.sleep can only be called inside a fiber");
  if (!(seconds >= 0) || seconds > 1e9) return luaL_argerror(L, 1, "seconds must be between 0 and 1e9");
  if (f->cancelled) {
    lua_pushnil(L);
    lua_pushliteral(L, "cancelled");
    lua_pushliteral(L, "the fiber was cancelled");
    return 3;
  }
  uint64_t ms = (uint64_t)ceil(seconds * 1000.0);
  /* The loop's clock is cached per iteration; a fiber that computed for a while must not have
   * that time counted against its sleep. */
  uv_update_time(rt->loop);
  sleepq_t *q = queue_for(rt->timers, ms);
  f->sleep.due = uv_now(rt->loop) + ms;
  f->sleep.seq = ++rt->timers->seq;
  f->sleep.queue = q;
  f->sleep.next = NULL;
  f->sleep.prev = q->tail;
  if (q->tail) {
    q->tail->sleep.next = f;
  } else {
    q->head = f;
    uv_timer_start(&q->timer, on_queue_timer, ms, 0);
  }
  q->tail = f;
  int r = rage__fiber_suspend(L, f, on_cancel, NULL);
  f->sleep.gen = f->gen;
  return r;
}
