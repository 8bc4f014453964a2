# One image with both binaries: /manager (the operator) and /cacheserver
# (the cache server the operator runs in each shard's pod).
#   docker build --build-arg VERSION=v0.1.0 -t ghcr.io/diskcache-operator/diskcache-operator:v0.1.0 .

FROM golang:1.26-bookworm AS builder
ARG VERSION=v0.1.0
WORKDIR /src
# Modules first, so source changes reuse the download layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# cgo links SQLite (mattn/go-sqlite3); both binaries are linked statically
# against glibc, with Go's own user and DNS lookups (osusergo, netgo) so no
# NSS modules are needed at run time.
ENV CGO_ENABLED=1
RUN set -eux; \
    flags="-linkmode external -extldflags -static -s -w"; \
    tags="osusergo,netgo,sqlite_omit_load_extension"; \
    go build -trimpath -tags "$tags" -ldflags "$flags -X main.version=${VERSION}" -o /out/manager ./cmd/manager; \
    go build -trimpath -tags "$tags" -ldflags "$flags" -o /out/cacheserver ./cmd/cacheserver; \
    /out/manager --version

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/diskcache-operator/diskcache-operator" \
      org.opencontainers.image.description="DiskCache operator and cache server"
COPY --from=builder /out/manager /manager
COPY --from=builder /out/cacheserver /cacheserver
USER 65532:65532
ENTRYPOINT ["/manager"]
