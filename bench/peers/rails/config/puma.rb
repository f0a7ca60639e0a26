# Puma 5: 5 threads; one process (WORKERS=1) or that many forked workers. PORT from the environment.
threads 5, 5
workers Integer(ENV.fetch("WORKERS", "1")) if Integer(ENV.fetch("WORKERS", "1")) > 1
bind "tcp://127.0.0.1:#{ENV.fetch("PORT")}"
environment "production"
# W6 holds idle keep-alive connections open during a W1 run: keep them as long as the peers.
persistent_timeout 300
quiet
preload_app!
# SIGTERM stops gracefully and exits 0, as the other servers do.
raise_exception_on_sigterm false
