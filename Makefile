# The commands the README gives and CI runs. `.ci/run` calls `make test`.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test bench fmt lint deps test-rust

## test: install what the tests need, then check formatting, lints and every test
test: deps lint test-rust

## deps: redis-server (the tests start their own on free ports) from the system's packages
deps:
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then \
		echo "installing redis-server from the system's packages"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null; \
	fi
	@redis-server --version

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test-rust:
	$(CARGO) test --workspace

## bench: criterion benches (not part of `make test`: speed is measured, never asserted)
bench:
	$(CARGO) bench -p flux-core --bench core

fmt:
	$(CARGO) fmt --all
