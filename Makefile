# Handoff: the two commands most people need are `make demo` and `make test`.
CARGO ?= cargo

.PHONY: demo demo-cluster test build lint fmt clean-demo fuzz screenshots bench examples-deps

## demo: build and run SERVER1 (http://127.0.0.1:8001) and SERVER2 (http://localhost:8002); Ctrl-C stops both
demo:
	bash scripts/demo.sh

## demo-cluster: the same two URLs served by HAProxy in front of two replicas of each server, with
## PostgreSQL and Redis (installs redis-server, postgresql and haproxy with apt if missing)
demo-cluster:
	bash scripts/demo-cluster.sh

## test: formatting, lints, then every test (unit, integration, real binaries), and the
## integration suite again with SERVER1 on PostgreSQL
test: lint build examples-deps
	$(CARGO) test --workspace --locked
	HANDOFF_TEST_DATABASE=postgres $(CARGO) test -p handoff-tests --test it --locked

## examples-deps: what the partner examples in examples/ need (the tests run them): PyJWT for
## Python, jose for Node (from their lock files)
examples-deps:
	python3 -c 'import jwt, cryptography' 2>/dev/null || python3 -m pip install -q -r examples/python/requirements.txt
	[ -d examples/node/node_modules/jose ] || npm ci --prefix examples/node --no-audit --no-fund --loglevel=error

## build: the server binaries (the process tests run them)
build:
	$(CARGO) build --workspace --bins --locked

## lint: rustfmt and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## fmt: format the code
fmt:
	$(CARGO) fmt --all

## clean-demo: forget the demo's key, database and user
clean-demo:
	rm -rf .demo

## fuzz: run each fuzz target for FUZZ_SECONDS (default 60) with cargo-fuzz (installed if missing)
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in verify jwks targets cookies; do \
	  mkdir -p corpus/$$target && \
	  $(CARGO) fuzz run $$target corpus/$$target seeds/$$target --sanitizer none -- \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=16384 || exit 1; \
	done

## screenshots: run the browser tests and copy the pages they photograph into docs/screenshots
screenshots: build
	$(CARGO) test -p handoff-tests --locked -- browser::
	mkdir -p docs/screenshots && cp target/screenshots/*.png docs/screenshots/

## bench: load, latency and instruction benchmarks of SERVER2 (memory and Redis replay stores) and SERVER1 (SQLite and PostgreSQL) (installs wrk, redis-server, postgresql, valgrind and perf with apt if missing); prints a table, then what binding a browser handoff to its browser costs
bench:
	command -v wrk >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q wrk)
	command -v redis-server >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q redis-server)
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q postgresql)
	(command -v valgrind && command -v perl) >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q valgrind perl) || echo "no valgrind: the instruction count is skipped"
	command -v perf >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q linux-perf) || echo "no perf: the profiled Redis comparison is skipped"
	python3 scripts/bench.py
	$(CARGO) bench --locked -p handoff-tests --bench flow
