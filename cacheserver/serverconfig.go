package cacheserver

import (
	"net/http"
	"os"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
)

// handleGetConfig answers the start-up configuration the server runs with
// (GET /v1/settings answers the engine settings), the databases it set
// aside at start, and to the operator the fingerprints of the tokens it
// accepts. The operator's tests read it to see that a rolled pod took a new
// value.
func (s *Server) handleGetConfig(w http.ResponseWriter, r *http.Request) error {
	c := wire.ServerConfig{
		Fanout:                 s.cache.DatabaseCount(),
		DatabaseTimeoutSeconds: s.cache.Timeout().Seconds(),
		MaxKeyBytes:            s.cfg.MaxKeyBytes,
		MaxValueBytes:          s.cfg.MaxValueBytes,
		RequestTimeoutSeconds:  s.cfg.RequestTimeout.Seconds(),
		TLS:                    s.cfg.TLSCert != "",
		FsyncValueFiles:        s.cfg.FsyncValueFiles,
		MetricsRequireToken:    s.cfg.MetricsRequireToken,
		GoDebug:                os.Getenv("GODEBUG"),
		PageSize:               s.cfg.PageSize,
		Quarantined:            []wire.Quarantined{},
		DiskFull:               s.disk.isFull(),
		MemoryLimitBytes:       s.cfg.MemoryLimit,
		GoMemoryLimitBytes:     goMemoryLimit(),
	}
	for i := range s.cache.DatabaseCount() {
		c.DatabasePageSizes = append(c.DatabasePageSizes, s.cache.Database(i).PageSize())
	}
	for _, q := range s.cache.Quarantined() {
		c.Quarantined = append(c.Quarantined, wire.Quarantined{Database: q.Index, MovedTo: q.Path, Error: q.Err.Error()})
	}
	if s.tokens != nil && s.isAdmin(r) {
		c.TokenFingerprints = s.tokens.fingerprints()
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}
