# Palisade developer entry points. `make help` lists them.

CARGO ?= cargo
E2E_CACHE ?= $(HOME)/.cache/palisade-e2e

.PHONY: help build build-static images chart run test test-clippy lint lint-files lint-builds fmt e2e e2e-kube e2e-pod e2e-node e2e-launcher e2e-binaries bench bench-images bench-detection bench-audit bench-fleet fuzz clean

help:
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

ENFORCER_TARGET ?= x86_64-unknown-linux-musl
ENFORCER_BIN = target/$(ENFORCER_TARGET)/release-small/palisade-enforcer
LAUNCH_BIN = target/$(ENFORCER_TARGET)/release-small/palisade-launch

build: ## Build the control plane (release) and the enforcer (static musl binary, size-optimised)
	$(CARGO) build --release -p palisade
	rustup target add $(ENFORCER_TARGET) >/dev/null 2>&1 || true
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --profile release-small -p palisade-enforcer --target $(ENFORCER_TARGET)

# Static (musl) builds for the container images: no libc in the image.
PALISADE_STATIC = target/$(ENFORCER_TARGET)/image/palisade
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
IMAGE_REPO ?= ghcr.io/palisade-dev
IMAGES_DIR ?= target/images
OCI_LABELS = --label org.opencontainers.image.source=https://github.com/palisade-dev/palisade \
	--label org.opencontainers.image.version=$(VERSION) \
	--label org.opencontainers.image.revision=$(REVISION) \
	--label org.opencontainers.image.licenses=Apache-2.0

build-static: ## Static musl builds of palisade and palisade-enforcer (needs musl-tools)
	rustup target add $(ENFORCER_TARGET) >/dev/null 2>&1 || true
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --profile image -p palisade --bin palisade --target $(ENFORCER_TARGET)
	CC_x86_64_unknown_linux_musl=musl-gcc $(CARGO) build --profile release-small -p palisade-enforcer -p palisade-launch --target $(ENFORCER_TARGET)

images: build-static ## OCI archives of both images in target/images (offline, non-root, reproducible)
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) bash images/build.sh $(IMAGES_DIR) \
	  $(IMAGE_REPO)/palisade:$(VERSION) /usr/local/bin/palisade --cmd serve $(OCI_LABELS) \
	  --label org.opencontainers.image.title=palisade -- $(PALISADE_STATIC)=/usr/local/bin/
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) bash images/build.sh $(IMAGES_DIR) \
	  $(IMAGE_REPO)/palisade-enforcer:$(VERSION) /usr/local/bin/palisade-enforcer $(OCI_LABELS) \
	  --label org.opencontainers.image.title=palisade-enforcer -- $(ENFORCER_BIN)=/usr/local/bin/ \
	  $(LAUNCH_BIN)=/usr/local/bin/
	@ls -l $(IMAGES_DIR)

# The chart ships the policy library; it is copied in here instead of kept
# as a symlink in the source tree (helm packages no symlinks).
CHART_DIR ?= target/chart/palisade
chart: ## The Helm chart with the policy library in target/chart/palisade (and a .tgz when helm is installed)
	rm -rf $(CHART_DIR) && mkdir -p $(dir $(CHART_DIR))
	cp -R helm/palisade $(CHART_DIR)
	mkdir -p $(CHART_DIR)/policies && cp policies/*.yaml $(CHART_DIR)/policies/
	@if command -v helm >/dev/null; then helm package $(CHART_DIR) -d $(dir $(CHART_DIR)) >/dev/null && ls $(dir $(CHART_DIR))*.tgz; fi

run: ## Run the webhook with embedded defaults (self-signed TLS on :8443, policies/)
	$(CARGO) run --release -p palisade --bin palisade -- serve

test: ## Unit and integration tests (real server on 127.0.0.1; SQLite and, when installed, PostgreSQL)
	bash tests/with-postgres.sh $(CARGO) test --workspace $(TEST_FLAGS)

# CI's tests and clippy in one compile: clippy-driver compiles the
# workspace's own crates for the tests (RUSTC_WORKSPACE_WRAPPER; the
# dependencies are plain rustc) and reports clippy's findings on the way,
# as errors. `make lint` would compile every crate a second time, check
# only. --all-targets: the benchmarks are linted (and run once) too.
test-clippy: ## make test, with clippy's findings as errors, and the lint that needs no compile
	$(MAKE) lint-files
	RUSTC_WORKSPACE_WRAPPER="$$(command -v clippy-driver)" RUSTFLAGS="-D warnings" \
	  $(MAKE) test TEST_FLAGS=--all-targets
	$(MAKE) lint-builds

lint: lint-files ## rustfmt, clippy (warnings are errors), shellcheck on every tracked shell script, chart appVersion = Cargo version, relative links in README.md and docs/ resolve
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(MAKE) lint-builds

lint-files: ## The lint that compiles nothing: chart appVersion, links, shellcheck, rustfmt
	@grep -qx "appVersion: \"$(VERSION)\"" helm/palisade/Chart.yaml || \
	  { echo "helm/palisade/Chart.yaml appVersion must be $(VERSION) (Cargo.toml): the chart's default images are what make images builds"; exit 1; }
	python3 tests/check-links.py
	@# Any finding fails (xargs exits non-zero); settings in .shellcheckrc.
	git ls-files -z '*.sh' .ci/run | xargs -0 shellcheck -x
	$(CARGO) fmt --all -- --check

lint-builds: ## Builds other than the workspace's default: no server feature, the fuzz target
	@# The engine stands alone, and the CLI without `serve` links no server.
	$(CARGO) check -p palisade-engine -p palisade --no-default-features
	@# The fuzz target lives outside the workspace: keep it compiling on stable.
	$(CARGO) check --manifest-path fuzz/Cargo.toml
	@! $(CARGO) tree -p palisade --no-default-features -e normal --prefix none | grep -E '^(sqlx|kube-runtime|kube-client|warp) ' || \
	  { echo "palisade without the server feature must not link sqlx, kube-runtime, kube-client or warp"; exit 1; }

fmt:
	$(CARGO) fmt --all

e2e-binaries: ## Build pinned etcd, Kubernetes (control plane, kubelet, kube-proxy, kubectl), CoreDNS, helm, pause (cached)
	PALISADE_E2E_CACHE=$(E2E_CACHE) bash tests/e2e/build-binaries.sh

e2e: e2e-kube e2e-pod e2e-launcher e2e-node ## All end-to-end suites (e2e-pod, e2e-launcher, e2e-node need root)

# The suites run the static binaries the images ship.
e2e-kube: e2e-binaries build-static chart ## End-to-end against a real kube-apiserver + controller-manager
	PALISADE_E2E_CACHE=$(E2E_CACHE) PALISADE_BIN=$(PALISADE_STATIC) PALISADE_CHART=$(CHART_DIR) bash tests/e2e/run.sh

e2e-pod: build-static ## Enforcer in a simulated pod (namespaces, overlayfs) with a real policy service
	PALISADE_BIN=$(PALISADE_STATIC) PALISADE_ENFORCER_BIN=$(ENFORCER_BIN) PALISADE_LAUNCH_BIN=$(LAUNCH_BIN) \
	  bash tests/enforcer/run.sh

e2e-node: e2e-binaries images chart ## Palisade's chart and enforcer in running Pods on a real node (kubelet, containerd); needs root
	PALISADE_E2E_CACHE=$(E2E_CACHE) PALISADE_IMAGES_DIR=$(IMAGES_DIR) PALISADE_BIN=$(PALISADE_STATIC) PALISADE_CHART=$(CHART_DIR) \
	  bash tests/node/run.sh

e2e-launcher: build-static ## The Landlock launcher against the real kernel (attacks as an unprivileged UID); needs root
	PALISADE_LAUNCH=$(LAUNCH_BIN) bash tests/launcher/run.sh

bench-detection: build-static ## Enforcer detection rates by process lifetime, CPU under exec churn and idle (simulated pod; needs root; updates bench/RESULTS.md)
	PALISADE_BIN=$(PALISADE_STATIC) PALISADE_ENFORCER_BIN=$(ENFORCER_BIN) PALISADE_LAUNCH_BIN=$(LAUNCH_BIN) \
	  PALISADE_DETECTION_TABLE=1 PALISADE_CHURN_TABLE=1 \
	  PALISADE_POD_RESULTS=target/pod-results.txt bash tests/enforcer/run.sh
	PALISADE_POD_RESULTS=target/pod-results.txt bash bench/images.sh --update-detection bench/RESULTS.md

bench-audit: e2e-binaries build-static ## Background audit at 1000 workloads on a real control plane: writes, time, memory (updates bench/RESULTS.md)
	PALISADE_E2E_CACHE=$(E2E_CACHE) PALISADE_BIN=$(PALISADE_STATIC) bash bench/audit.sh --update bench/RESULTS.md

bench-fleet: ## 10,000 simulated enforcers on two replicas sharing PostgreSQL (and one on SQLite, and 30,000): memory, push latency, back-pressure (updates bench/RESULTS.md)
	bash bench/fleet.sh --update bench/RESULTS.md

bench-images: images ## Refresh only the image-size, detection and e2e-node sections of bench/RESULTS.md
	IMAGES_DIR=$(IMAGES_DIR) bash bench/images.sh --update bench/RESULTS.md

bench: build images ## Benchmarks (with image sizes and the last e2e-node figures); writes bench/RESULTS.md
	PALISADE_ENFORCER_BIN=$(ENFORCER_BIN) PALISADE_LAUNCH_BIN=$(LAUNCH_BIN) bash bench/run.sh

FUZZ_SECONDS ?= 60
fuzz: ## Fuzz AdmissionReview decoding + mutate/validate for FUZZ_SECONDS (needs nightly and cargo-fuzz)
	cargo +nightly fuzz run admission fuzz/corpus/admission fuzz/regressions/admission tests/fixtures/admission -- -max_total_time=$(FUZZ_SECONDS)

clean:
	$(CARGO) clean
