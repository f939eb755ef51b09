# syntax=docker/dockerfile:1
#
# Small static images of the FerroLB controller and speaker.
#
#   docker build --target controller -t REGISTRY/ferrolb/ferrolb-controller:TAG .
#   docker build --target speaker    -t REGISTRY/ferrolb/ferrolb-speaker:TAG .
#
# Both binaries are linked statically against musl and run from an empty image: no
# shell, no package manager, nothing to patch but FerroLB itself.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
# Manifests first so the dependency build is cached across source changes.
COPY Cargo.toml Cargo.lock ./
COPY address address
COPY crds crds
COPY telemetry telemetry
COPY controller controller
COPY speaker speaker
COPY e2e e2e
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target x86_64-unknown-linux-musl \
        -p ferrolb-controller -p ferrolb-speaker \
    && mkdir -p /out \
    && cp target/x86_64-unknown-linux-musl/release/ferrolb-controller \
          target/x86_64-unknown-linux-musl/release/ferrolb-speaker /out/

FROM scratch AS controller
COPY --from=build /out/ferrolb-controller /ferrolb-controller
USER 65532:65532
ENTRYPOINT ["/ferrolb-controller"]

# The speaker runs as root inside the container only to hold NET_RAW (and NET_ADMIN
# with strictARP enforcement); the chart drops every other capability.
FROM scratch AS speaker
COPY --from=build /out/ferrolb-speaker /ferrolb-speaker
ENTRYPOINT ["/ferrolb-speaker"]
