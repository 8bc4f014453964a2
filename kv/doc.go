// Package kv is the data contract shared by the cache engine, the HTTP wire
// format, the cache server and the Go client: keys, values, expiry, the
// options of a write, Check warnings and the error sentinels. It has no
// dependencies beyond the standard library and needs no cgo, so clients and
// the operator can use it without linking SQLite.
package kv
