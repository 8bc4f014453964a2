package cacheserver

import "net/http"

// serverConfig is the start-up configuration a server runs with: what only
// a restart changes (GET /v1/settings answers the engine settings). The
// operator's tests read it to see that a rolled pod took a new value.
type serverConfig struct {
	Fanout                 int     `json:"fanout"`
	DatabaseTimeoutSeconds float64 `json:"database_timeout_seconds"`
	MaxKeyBytes            int64   `json:"max_key_bytes"`
	MaxValueBytes          int64   `json:"max_value_bytes"`
	RequestTimeoutSeconds  float64 `json:"request_timeout_seconds"`
	TLS                    bool    `json:"tls"`
}

func (s *Server) handleGetConfig(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, serverConfig{
		Fanout:                 s.cache.DatabaseCount(),
		DatabaseTimeoutSeconds: s.cache.Timeout().Seconds(),
		MaxKeyBytes:            s.cfg.MaxKeyBytes,
		MaxValueBytes:          s.cfg.MaxValueBytes,
		RequestTimeoutSeconds:  s.cfg.RequestTimeout.Seconds(),
		TLS:                    s.cfg.TLSCert != "",
	})
	return nil
}
