package cacheserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"slices"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
	"github.com/diskcache-operator/diskcache-operator/settings"
)

// removed answers a bulk removal. A timeout part way still reports what was
// removed (with 503), since those removals are committed.
func removed(w http.ResponseWriter, n int64, err error) error {
	var te *kv.TimeoutError
	if errors.As(err, &te) {
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{
			"error": wire.CodeTimeout, "message": err.Error(), "removed": n,
		})
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]int64{"removed": n})
	return nil
}

func (s *Server) handleExpire(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	n, err := st.Expire(r.Context(), 0)
	return removed(w, n, err)
}

func (s *Server) handleCull(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	n, err := st.Cull(r.Context())
	return removed(w, n, err)
}

func (s *Server) handleClear(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	n, err := st.Clear(r.Context())
	return removed(w, n, err)
}

func (s *Server) handleEvict(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	if !q.Has(wire.ParamTag) {
		return badRequest(wire.CodeBadRequest, "evict needs ?%s=", wire.ParamTag)
	}
	tag, err := wire.ParseTag(q.Get(wire.ParamTag), q.Get(wire.ParamTagType))
	if err != nil {
		return badRequest(wire.CodeBadRequest, "tag: %v", err)
	}
	n, err := st.Evict(r.Context(), tag)
	return removed(w, n, err)
}

func (s *Server) handleCheck(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	fix, err := boolParam(r, "fix", false)
	if err != nil {
		return err
	}
	warns, err := st.Check(r.Context(), fix)
	if err != nil {
		return err
	}
	if warns == nil {
		warns = []kv.Warning{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"warnings": warns, "fixed": fix})
	return nil
}

// StatsResponse is the body of GET and POST /v1/stats.
type StatsResponse struct {
	Hits       int64 `json:"hits"`
	Misses     int64 `json:"misses"`
	Statistics bool  `json:"statistics"`
}

// handleStats is python-diskcache's stats(enable, reset) on POST and a
// read-only view on GET.
func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	cur := st.Settings().Statistics
	enable, reset := cur, false
	if r.Method == http.MethodPost {
		if enable, err = boolParam(r, "enable", true); err != nil {
			return err
		}
		if reset, err = boolParam(r, "reset", false); err != nil {
			return err
		}
	}
	hits, misses, err := st.Stats(r.Context(), enable, reset)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, StatsResponse{Hits: hits, Misses: misses, Statistics: enable})
	return nil
}

// InfoResponse is the body of GET /v1/info.
type InfoResponse struct {
	Count    int64             `json:"count"`
	Volume   int64             `json:"volume"`
	Settings settings.Settings `json:"settings"`
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	n, err := st.Len(r.Context())
	if err != nil {
		return err
	}
	vol, err := st.Volume(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, InfoResponse{Count: n, Volume: vol, Settings: storeSettings(st).Typed()})
	return nil
}

// storeSettings returns a store's settings as its users set them: a
// FanoutCache's size_limit is the total over its databases, as --size-limit
// and PATCH /v1/settings take it.
func storeSettings(st Store) engine.Settings {
	set := st.Settings()
	if fc, ok := st.(*engine.FanoutCache); ok {
		set.SizeLimit *= int64(fc.DatabaseCount())
	}
	return set
}

func (s *Server) handleGetSettings(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, storeSettings(st).Typed())
	return nil
}

// handlePatchSettings applies a JSON object of live settings. Every name
// and value is validated before any is applied.
func (s *Server) handlePatchSettings(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	var body map[settings.Name]json.RawMessage
	if err := decodeJSON(w, r, 64<<10, &body); err != nil {
		return err
	}
	names := make([]settings.Name, 0, len(body))
	values := map[settings.Name]any{}
	check := storeSettings(st)
	for name, raw := range body {
		if !name.IsLive() {
			return badRequest(wire.CodeBadSetting, "%q cannot be changed at run time (runtime settings: %s)", name, settings.JoinNames(settings.Live()))
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return badRequest(wire.CodeBadSetting, "%s: %v", name, err)
		}
		if n, ok := v.(json.Number); ok {
			i, err := n.Int64()
			if err != nil {
				return badRequest(wire.CodeBadSetting, "%s must be an integer, got %s", name, n)
			}
			v = i
		}
		if err := check.Set(name, v); err != nil {
			return err
		}
		names = append(names, name)
		values[name] = v
	}
	slices.Sort(names)
	for _, name := range names {
		if err := st.Reset(r.Context(), name, values[name]); err != nil {
			return err
		}
	}
	writeJSON(w, http.StatusOK, storeSettings(st).Typed())
	return nil
}

func (s *Server) handleTagIndex(w http.ResponseWriter, r *http.Request) error {
	st, err := s.store(r)
	if err != nil {
		return err
	}
	if r.Method == http.MethodDelete {
		err = st.DropTagIndex(r.Context())
	} else {
		err = st.CreateTagIndex(r.Context())
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[settings.Name]bool{settings.NameTagIndex: r.Method != http.MethodDelete})
	return nil
}
