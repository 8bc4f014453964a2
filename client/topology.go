package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// Topology is the shard layout a cacheserver routes keys by
// (GET /v1/topology).
type Topology struct {
	// Epoch increases with every change of Shards.
	Epoch int64 `json:"epoch"`
	// Shards are the base URLs of shard 0, 1, …
	Shards []string `json:"shards"`
	// Self is the answering server's shard index.
	Self int `json:"self"`
	// Previous is the layout before this epoch while keys still move.
	Previous *TopologyEpoch `json:"previous"`
	// Rebalancing is true while the servers move keys to their owners.
	Rebalancing bool `json:"rebalancing"`
	// Progress is the server's report on a rebalance.
	Progress map[string]any `json:"progress,omitempty"`
}

// TopologyEpoch is one epoch's shard list.
type TopologyEpoch struct {
	Epoch  int64    `json:"epoch"`
	Shards []string `json:"shards"`
}

// TopologyUpdate is the body of PUT /v1/topology: the rest of the document
// is the server's own.
type TopologyUpdate struct {
	Epoch    int64          `json:"epoch"`
	Shards   []string       `json:"shards"`
	Previous *TopologyEpoch `json:"previous"`
}

// CodeTopologyConflict is the error code of a PUT /v1/topology that a
// server refuses because it has a newer epoch, or the same epoch with other
// shards.
const CodeTopologyConflict = "topology_conflict"

// ErrTopologyConflict matches a *TopologyConflictError with errors.Is.
var ErrTopologyConflict error = sentinel(CodeTopologyConflict)

// TopologyConflictError is a refused PUT /v1/topology; Current is the
// topology the server keeps.
type TopologyConflictError struct {
	Message string
	Current Topology
}

func (e *TopologyConflictError) Error() string {
	return fmt.Sprintf("cacheserver: 409 %s: %s (server has epoch %d with %d shards)",
		CodeTopologyConflict, e.Message, e.Current.Epoch, len(e.Current.Shards))
}

// Is matches ErrTopologyConflict.
func (e *TopologyConflictError) Is(target error) bool { return target == ErrTopologyConflict }

// Topology reads the server's topology (data or admin token).
func (c *Client) Topology(ctx context.Context) (*Topology, error) {
	var t Topology
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
func (c *Client) PutTopology(ctx context.Context, update TopologyUpdate) (*Topology, error) {
	body, err := json.Marshal(update)
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
	var t Topology
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, fmt.Errorf("client: decode topology answer: %w", err)
	}
	return &t, nil
}

// conflictError decodes a 409 answer to PUT /v1/topology. Its code may be
// in "error" (like every other error body) or "code".
func conflictError(status int, b []byte) error {
	var body struct {
		Error    string    `json:"error"`
		Code     string    `json:"code"`
		Message  string    `json:"message"`
		Topology *Topology `json:"topology"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return &Error{Status: status, Code: http.StatusText(status), Message: string(bytes.TrimSpace(b))}
	}
	code := body.Code
	if code == "" {
		code = body.Error
	}
	if code != CodeTopologyConflict || body.Topology == nil {
		return &Error{Status: status, Code: code, Message: body.Message}
	}
	return &TopologyConflictError{Message: body.Message, Current: *body.Topology}
}

// IsTopologyConflict returns the server's topology when err is a refused
// PUT /v1/topology.
func IsTopologyConflict(err error) (*Topology, bool) {
	var tc *TopologyConflictError
	if errors.As(err, &tc) {
		return &tc.Current, true
	}
	return nil, false
}
