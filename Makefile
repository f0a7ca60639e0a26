# rage-lua: the two commands are `make run` (the showcase app) and `make test` (everything).
# Both install missing Debian packages first, then configure and build.

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
APP        ?= apps/todo
PORT       ?= 3000

.PHONY: all deps build run test test-fast test-asan bench fuzz clean

all: build

deps:
	@tools/deps

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Serves the showcase app on http://127.0.0.1:$(PORT), with a throwaway PostgreSQL when
# DATABASE_URL is not set.
run: build
	RAGE_BIN=$(BUILD)/rage-lua tools/run-app $(APP) --port $(PORT)

# The whole suite: the ASan + UBSan build runs the C tests and the end-to-end specs, then the
# regular build runs everything. The last lines are ctest's summary.
test: deps test-asan test-fast

test-fast: build
	cd $(BUILD) && ctest --output-on-failure -j 2

test-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DRAGE_SANITIZE=ON -DRAGE_WERROR=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@# A small quarantine: the Lua state's large blocks come from malloc, and ASan's default
	@# 256 MiB of freed-but-held memory would hide what the memory specs measure.
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=4 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j 2 -R '^(c|e2e|apps)/'

bench:
	bench/run

# Fuzzes the request path with libFuzzer for FUZZ_SECONDS (clang builds everything with ASan).
FUZZ_SECONDS ?= 60
fuzz: deps
	@command -v clang >/dev/null || tools/deps --fuzz
	@CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DRAGE_FUZZ=ON -DRAGE_SANITIZE=ON >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target fuzz-http1
	mkdir -p build-fuzz/corpus
	tools/fuzz-seeds build-fuzz/corpus
	build-fuzz/core/test/fuzz-http1 -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build-fuzz/corpus

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-release build-fuzz
