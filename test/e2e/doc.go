// Package e2e holds the end-to-end tests of the operator on the real local
// cluster of hack/local-cluster. They are behind the build tag e2e, so
// `go test ./...` skips them: run them with `make e2e`.
package e2e
