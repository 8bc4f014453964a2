# syntax=docker/dockerfile:1
# One image with both binaries: /manager (the operator) and /cacheserver
# (the cache server the operator runs in each shard's pod).
#   docker build --build-arg VERSION=v0.1.0 -t ghcr.io/diskcache-operator/diskcache-operator:v0.1.0 .
# (make docker-build passes the tag of IMG as VERSION, as hack/image does.) The
# cache mounts below need BuildKit, Docker's default builder since 23.0.

FROM golang:1.26-bookworm AS builder
ARG VERSION=v0.1.0
WORKDIR /src
# The engine's own C code (engine/walvfs.c) includes SQLite's header; the
# SQLite it links is mattn/go-sqlite3's.
RUN apt-get update -qq \
    && apt-get install -y -qq --no-install-recommends libsqlite3-dev \
    && rm -rf /var/lib/apt/lists/*
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# Only the cache server needs cgo: its engine links SQLite through
# mattn/go-sqlite3, statically against glibc, with Go's own user and DNS
# lookups (osusergo, netgo) so no NSS modules are needed at run time. The
# operator imports no cgo package (the contract types live in kv/), so it is a
# pure-Go static binary (make lint checks that it builds with CGO_ENABLED=0).
# The module and build caches persist between builds (BuildKit cache mounts,
# not part of any layer).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    set -eux; \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/manager ./cmd/manager; \
    CGO_ENABLED=1 go build -trimpath -tags "osusergo,netgo,sqlite_omit_load_extension" \
        -ldflags "-linkmode external -extldflags -static -s -w" -o /out/cacheserver ./cmd/cacheserver; \
    /out/manager --version

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=v0.1.0
# The labels hack/image/build.sh gives its image.
LABEL org.opencontainers.image.source="https://github.com/diskcache-operator/diskcache-operator" \
      org.opencontainers.image.description="DiskCache operator and cache server" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/manager /manager
COPY --from=builder /out/cacheserver /cacheserver
USER 65532:65532
ENTRYPOINT ["/manager"]
