# Fluid (Rust). `make demo` and `make test` are the two commands a fresh machine needs.
SHELL := /bin/bash
CARGO ?= cargo
export FLUID_SERVICES_DIR ?= /var/tmp/fluid-services

.PHONY: demo demo-cluster test test-unit test-fuse test-kube test-cluster bench lint services \
	services-down fmt build crds image

## demo: the main job on an embedded default dataset
demo:
	@scripts/demo.sh

## demo-cluster: the same job on a real single-node Kubernetes: helm install, a Dataset, two
## reader pods (cold, then warm)
demo-cluster:
	@scripts/demo-cluster.sh

## test: start every test server (installing what is missing), then run all tests
# The integration tests run the built daemons, which `cargo test` alone does not build.
test: services
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace --no-fail-fast -- --show-output

# The narrower targets below run a part of `make test`, starting only the servers that part
# needs; `make test` stays the whole (CI runs it).
IT := $(CARGO) test -p fluid-tests --no-fail-fast

## test-unit: the crates' own tests (no servers, no mounts), the chart's CRD check among them
test-unit:
	$(CARGO) test --workspace --exclude fluid-tests --no-fail-fast
	$(IT) --lib

## test-fuse: real FUSE mounts and the CSI plugins over local and SeaweedFS sources, csi-sanity
test-fuse:
	scripts/services.sh up fuse seaweedfs csisanity
	$(CARGO) build --workspace --bins
	$(IT) --test fuse -- --skip ceph --skip minidfs

## test-kube: the node plugin, controller and webhook against a real kube-apiserver
test-kube:
	scripts/services.sh up fuse seaweedfs kube
	$(CARGO) build --workspace --bins
	$(IT) --test kube

## test-cluster: the chart, the image and pods on a real single-node Kubernetes
test-cluster:
	scripts/services.sh up fuse seaweedfs kube helm cluster
	$(CARGO) build --workspace --bins
	$(IT) --test cluster

## bench: side-by-side benchmarks against s3fs and rclone
bench:
	@scripts/bench.sh

## image: the Fluid image as an OCI archive in target/image, built without a Docker engine
image:
	@scripts/image.sh

## lint: clippy with warnings as errors, formatting, and vendor/fuser = fuser 0.18.0 + its patch
lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) fmt --all -- --check
	scripts/vendor-fuser.sh --check

## crds: regenerate the CRD YAML in the chart from the Rust types (a test checks it is current)
crds:
	$(CARGO) build -p csi-controller
	cd deploy/charts/fluid/crds && ../../../../target/debug/fluid-csi-controller crds | \
	  csplit --quiet --elide-empty-files --prefix=crd- - '/^---$$/' '{*}' && \
	  mv crd-00 data.fluid.io_datasets.yaml && mv crd-01 data.fluid.io_cacheruntimes.yaml && \
	  mv crd-02 data.fluid.io_dataloads.yaml

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --workspace

services:
	scripts/services.sh up

services-down:
	scripts/services.sh down
