# Palisade developer entry points. `make help` lists them.

CARGO ?= cargo
E2E_CACHE ?= $(HOME)/.cache/palisade-e2e

.PHONY: help build run test lint fmt e2e e2e-kube e2e-pod e2e-binaries bench fuzz clean

help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

ENFORCER_TARGET ?= x86_64-unknown-linux-musl
ENFORCER_BIN = target/$(ENFORCER_TARGET)/release-small/palisade-enforcer

build: ## Build the control plane (release) and the enforcer (static musl binary, size-optimised)
	$(CARGO) build --release -p palisade-webhook
	rustup target add $(ENFORCER_TARGET) >/dev/null 2>&1 || true
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --profile release-small -p palisade-enforcer --target $(ENFORCER_TARGET)

run: ## Run the webhook with embedded defaults (self-signed TLS on :8443, policies/)
	$(CARGO) run --release -p palisade-webhook --bin palisade -- serve

test: ## Unit and integration tests (real server on 127.0.0.1; SQLite and, when installed, PostgreSQL)
	bash tests/with-postgres.sh $(CARGO) test --workspace

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

e2e-binaries: ## Build pinned etcd, kube-apiserver, kube-controller-manager, kubectl, helm (cached)
	PALISADE_E2E_CACHE=$(E2E_CACHE) bash tests/e2e/build-binaries.sh

e2e: e2e-kube e2e-pod ## Both end-to-end suites

e2e-kube: e2e-binaries ## End-to-end against a real kube-apiserver + controller-manager
	$(CARGO) build --release -p palisade-webhook --bin palisade
	PALISADE_E2E_CACHE=$(E2E_CACHE) bash tests/e2e/run.sh

e2e-pod: build ## Enforcer in a simulated pod (namespaces, overlayfs) with a real policy service
	PALISADE_BIN=target/release/palisade PALISADE_ENFORCER_BIN=$(ENFORCER_BIN) \
	  bash tests/sidecar/run.sh

bench: build ## Benchmarks; writes bench/RESULTS.md
	PALISADE_ENFORCER_BIN=$(ENFORCER_BIN) bash bench/run.sh

FUZZ_SECONDS ?= 60
fuzz: ## Fuzz AdmissionReview decoding + mutate/validate for FUZZ_SECONDS (needs nightly and cargo-fuzz)
	cargo +nightly fuzz run admission fuzz/corpus/admission webhook/tests/fixtures -- -max_total_time=$(FUZZ_SECONDS)

clean:
	$(CARGO) clean
