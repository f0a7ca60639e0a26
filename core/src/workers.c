/*
 * workers.c - prefork supervision (rage_workers_run) and the port probe (see rage.h).
 *
 * The master is deliberately plain POSIX with no event loop: it blocks the signals it cares
 * about and waits for them with sigsuspend(), so a worker forked from it starts with no inherited
 * loop, no Lua state and no open handles. Workers live in their own process group, so a Ctrl-C
 * in the terminal reaches only the master, which forwards it once as SIGTERM; a second signal is
 * forwarded again, which makes the workers stop at once. Workers ask the kernel for SIGTERM if
 * the master dies, so none outlives it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "rage.h"
#include "runtime.h"
#include "util.h"

static volatile sig_atomic_t got_chld, got_stop, got_alarm, got_ready;

/* Readiness: a worker writes one record (its drain timeout) to the pipe and sends SIGUSR1 to wake
 * the master, which counts the records (signals of one kind do not queue; bytes in a pipe do).
 * A record is smaller than PIPE_BUF, so records from several workers never interleave. */
static int ready_pipe[2] = {-1, -1};
static int worker_ready_fd = -1;

static void on_signal(int sig) {
  if (sig == SIGCHLD) got_chld = 1;
  else if (sig == SIGALRM) got_alarm = 1;
  else if (sig == SIGUSR1) got_ready = 1;
  else got_stop++;
}

void rage_worker_ready(const rage_runtime_t *rt) {
  if (worker_ready_fd < 0) return;
  uint64_t drain = rt ? rt->cfg.drain_timeout : 0;
  (void)!write(worker_ready_fd, &drain, sizeof(drain));
  close(worker_ready_fd);
  worker_ready_fd = -1;
  kill(getppid(), SIGUSR1);
}

typedef struct {
  pid_t pid;
  uint64_t started;
} worker_t;

static pid_t spawn(int index, rage_worker_main_cb worker_main, void *data, const sigset_t *orig) {
  pid_t pid = fork();
  if (pid != 0) return pid;
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  signal(SIGCHLD, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  signal(SIGALRM, SIG_DFL);
  signal(SIGUSR1, SIG_DFL);
  close(ready_pipe[0]);
  worker_ready_fd = ready_pipe[1];
  sigprocmask(SIG_SETMASK, orig, NULL);
  if (getppid() == 1) _exit(0); /* the master died before prctl took effect */
  _exit(worker_main(index, data));
}

int rage_workers_run(int count, uint64_t drain_timeout, rage_worker_main_cb worker_main,
                     rage_workers_ready_cb on_ready, void *data) {
  if (count < 1 || worker_main == NULL) return RAGE_EINVAL;
  if (pipe2(ready_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return uv_translate_sys_error(errno);
  int nready = 0, announced = on_ready == NULL, reported = 0;
  worker_t *workers = rage__calloc((size_t)count, sizeof(*workers));
  sigset_t block, orig, wait_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGCHLD);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  sigaddset(&block, SIGALRM);
  sigaddset(&block, SIGUSR1);
  sigprocmask(SIG_BLOCK, &block, &orig);
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGCHLD, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGALRM, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  wait_mask = orig;
  sigdelset(&wait_mask, SIGCHLD);
  sigdelset(&wait_mask, SIGTERM);
  sigdelset(&wait_mask, SIGINT);
  sigdelset(&wait_mask, SIGALRM);
  sigdelset(&wait_mask, SIGUSR1);

  for (int i = 0; i < count; i++) {
    workers[i].pid = spawn(i, worker_main, data, &orig);
    workers[i].started = rage__now_ms();
  }
  int alive = count, stopping = 0, result = 0, forwarded = 0;
  while (alive > 0) {
    if (!got_chld && !got_alarm && !got_ready && got_stop == forwarded) sigsuspend(&wait_mask);
    if (got_ready) {
      got_ready = 0;
      uint64_t drains[8];
      ssize_t n;
      while ((n = read(ready_pipe[0], drains, sizeof(drains))) > 0) {
        for (size_t k = 0; k < (size_t)n / sizeof(drains[0]); k++) {
          nready++;
          if (!reported || drains[k] > drain_timeout) drain_timeout = drains[k];
          reported = 1;
        }
      }
      if (!announced && nready >= count && !stopping) {
        announced = 1;
        on_ready(data);
      }
    }
    if (got_stop > forwarded) {
      forwarded = got_stop;
      if (!stopping) {
        stopping = 1;
        rage__log(RAGE_LOG_INFO, "master: stopping %d worker(s)", alive);
        alarm((unsigned)(drain_timeout / 1000) + 2);
      }
      for (int i = 0; i < count; i++)
        if (workers[i].pid > 0) kill(workers[i].pid, SIGTERM);
    }
    if (got_alarm) {
      got_alarm = 0;
      if (stopping) {
        rage__log(RAGE_LOG_WARN, "master: workers did not stop in time; killing them");
        for (int i = 0; i < count; i++)
          if (workers[i].pid > 0) kill(workers[i].pid, SIGKILL);
      }
    }
    if (got_chld) {
      got_chld = 0;
      int status;
      pid_t pid;
      while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        int i;
        for (i = 0; i < count && workers[i].pid != pid; i++) {
        }
        if (i == count) continue;
        workers[i].pid = 0;
        alive--;
        int fatal = WIFEXITED(status) && WEXITSTATUS(status) == RAGE_WORKER_EXIT_FATAL;
        if (fatal && !stopping) {
          rage__log(RAGE_LOG_ERROR, "master: worker %d could not start; stopping", i);
          result = RAGE_EBOOT;
          stopping = 1;
          alarm((unsigned)(drain_timeout / 1000) + 2);
          for (int j = 0; j < count; j++)
            if (workers[j].pid > 0) kill(workers[j].pid, SIGTERM);
          continue;
        }
        if (stopping) continue;
        if (WIFSIGNALED(status))
          rage__log(RAGE_LOG_WARN, "master: worker %d (pid %d) killed by signal %d; restarting", i,
                    (int)pid, WTERMSIG(status));
        else
          rage__log(RAGE_LOG_WARN, "master: worker %d (pid %d) exited with %d; restarting", i,
                    (int)pid, WEXITSTATUS(status));
        /* A worker that dies right after starting would otherwise be restarted in a tight loop. */
        if (rage__now_ms() - workers[i].started < 1000) {
          struct timespec ts = {1, 0};
          nanosleep(&ts, NULL);
        }
        workers[i].pid = spawn(i, worker_main, data, &orig);
        workers[i].started = rage__now_ms();
        alive++;
      }
    }
  }
  alarm(0);
  close(ready_pipe[0]);
  close(ready_pipe[1]);
  ready_pipe[0] = ready_pipe[1] = -1;
  signal(SIGUSR1, SIG_DFL);
  signal(SIGCHLD, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  signal(SIGINT, SIG_DFL);
  signal(SIGALRM, SIG_DFL);
  sigprocmask(SIG_SETMASK, &orig, NULL);
  free(workers);
  return result;
}

int rage_probe_port(const char *host, int port) {
  struct sockaddr_storage addr;
  if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&addr) != 0 &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr) != 0)
    return UV_EINVAL;
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return uv_translate_sys_error(errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  socklen_t len = addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
  int r = 0;
  if (bind(fd, (struct sockaddr *)&addr, len) != 0) r = uv_translate_sys_error(errno);
  if (r == 0 && port == 0) {
    /* Report the port the kernel picked, so that workers can all bind it. */
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    getsockname(fd, (struct sockaddr *)&bound, &blen);
    r = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                          : ((struct sockaddr_in *)&bound)->sin_port);
  }
  close(fd);
  return r;
}
