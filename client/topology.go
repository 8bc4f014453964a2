package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/topology"
)

// ErrTopologyConflict matches a *TopologyConflictError with errors.Is.
var ErrTopologyConflict error = sentinel(wire.CodeTopologyConflict)

// TopologyConflictError is a refused PUT /v1/topology; Current is the
// topology the server keeps.
type TopologyConflictError struct {
	Message string
	Current topology.Topology
}

func (e *TopologyConflictError) Error() string {
	return fmt.Sprintf("cacheserver: 409 %s: %s (server has epoch %d with %d shards)",
		wire.CodeTopologyConflict, e.Message, e.Current.Epoch, len(e.Current.Shards))
}

// Is matches ErrTopologyConflict.
func (e *TopologyConflictError) Is(target error) bool { return target == ErrTopologyConflict }

// Topology reads the server's topology (data or admin token); a sharded
// server that has none yet answers epoch 0.
func (c *Client) Topology(ctx context.Context) (*topology.Topology, error) {
	var t topology.Topology
	if _, err := c.doJSON(ctx, request{method: http.MethodGet, path: "/v1/topology", idempotent: true}, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// PutTopology announces a topology to the server; the client's token must
// be the admin token. It returns the server's whole document. A server on a
// newer epoch, or on the same epoch with other shards, refuses with a
// *TopologyConflictError holding its topology. Sending the same update
// again is harmless, so it is retried like a read.
func (c *Client) PutTopology(ctx context.Context, a topology.Announcement) (*topology.Topology, error) {
	body, err := json.Marshal(a)
	if err != nil {
		return nil, fmt.Errorf("client: encode topology: %w", err)
	}
	resp, err := c.do(ctx, request{
		method: http.MethodPut, path: "/v1/topology", body: body, idempotent: true,
		header: http.Header{"Content-Type": {"application/json"}},
	}, http.StatusConflict)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("client: read topology answer: %w", err)
	}
	if resp.StatusCode == http.StatusConflict {
		return nil, conflictError(resp.StatusCode, b)
	}
	var t topology.Topology
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("client: decode topology answer: %w", err)
	}
	return &t, nil
}

// conflictError decodes a 409 answer to PUT /v1/topology.
func conflictError(status int, b []byte) error {
	var body struct {
		wire.Error
		Topology *topology.Topology `json:"topology"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return &Error{Status: status, Code: http.StatusText(status), Message: string(bytes.TrimSpace(b))}
	}
	if body.Code != wire.CodeTopologyConflict || body.Topology == nil {
		return &Error{Status: status, Code: body.Code, Message: body.Message}
	}
	return &TopologyConflictError{Message: body.Message, Current: *body.Topology}
}

// IsTopologyConflict returns the server's topology when err is a refused
// PUT /v1/topology.
func IsTopologyConflict(err error) (*topology.Topology, bool) {
	var tc *TopologyConflictError
	if errors.As(err, &tc) {
		return &tc.Current, true
	}
	return nil, false
}

// Usage returns the server's own figures (GET /v1/usage): requests served
// as owner, items evicted and expired, disk use and size limit. It is
// always the figures of the server the client talks to, never forwarded.
func (c *Client) Usage(ctx context.Context) (*wire.Usage, error) {
	var u wire.Usage
	if _, err := c.doJSON(ctx, request{method: http.MethodGet, path: "/v1/usage", idempotent: true}, &u); err != nil {
		return nil, err
	}
	return &u, nil
}
