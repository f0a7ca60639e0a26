-- W4U: every request waits on a 10 ms upstream call made with rage.http (the upstream is
-- rage-baseline's /wait, started by bench/run and named by RAGE_BENCH_UPSTREAM).
return {
  log = {level = "warn"},
  static = false,
}
