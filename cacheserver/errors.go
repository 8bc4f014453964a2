package cacheserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"

	"github.com/diskcache-operator/diskcache-operator/cacheserver/wire"
	"github.com/diskcache-operator/diskcache-operator/engine"
	"github.com/diskcache-operator/diskcache-operator/kv"
)

// apiError is an error with the HTTP status and code it is answered with.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(code, format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, code: code, msg: fmt.Sprintf(format, args...)}
}

func notFound(code, format string, args ...any) error {
	return &apiError{status: http.StatusNotFound, code: code, msg: fmt.Sprintf(format, args...)}
}

// diskFullMessage answers writes while the data volume is full.
const diskFullMessage = "no space left on the data volume; delete, evict, cull or clear items (or lower size_limit) to free space"

// jsonContentType is writeJSON's Content-Type, one slice for every answer
// (never modified in place).
var jsonContentType = []string{"application/json"}

// writeJSON answers with a JSON body.
func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// writeError maps err to a status and a JSON error body. Engine errors that
// are the client's fault become 4xx; timeouts 503 with Retry-After; the
// rest 500 (logged, with a generic message).
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	s.disk.noteError(err)
	var re *routingError
	if errors.As(err, &re) {
		if re.status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		if code, ok := re.body["error"].(string); ok {
			w.Header().Set(wire.HeaderError, code)
		}
		writeJSON(w, re.status, re.body)
		return
	}
	status, code, msg := s.classify(err)
	if status >= 500 && code == wire.CodeInternal {
		s.log.ErrorContext(r.Context(), "request failed", slog.String("method", r.Method),
			slog.String("path", r.URL.Path), slog.Any("error", err))
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	if status == http.StatusRequestTimeout && r.ProtoMajor == 1 {
		// The rest of the body may still come; an HTTP/2 stream ends alone.
		w.Header().Set("Connection", "close")
	}
	writeErrorJSON(w, status, wire.Error{Code: code, Message: msg})
}

// writeErrorJSON answers with an error body and its code in the
// Diskcache-Error header too (a HEAD's answer has no body).
func writeErrorJSON(w http.ResponseWriter, status int, e wire.Error) {
	w.Header().Set(wire.HeaderError, e.Code)
	writeJSON(w, status, e)
}

func (s *Server) classify(err error) (int, string, string) {
	if ae, ok := err.(*apiError); ok {
		// Most errors (a missing key): spare errors.As its variables.
		return ae.status, ae.code, ae.msg
	}
	var ae *apiError
	var mbe *http.MaxBytesError
	var cbe *clientBodyError
	switch {
	case errors.As(err, &ae):
		return ae.status, ae.code, ae.msg
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, wire.CodeValueTooLarge,
			fmt.Sprintf("value larger than the server's limit of %d bytes", mbe.Limit)
	case errors.As(err, &cbe) && errors.Is(err, os.ErrDeadlineExceeded):
		return http.StatusRequestTimeout, wire.CodeBodyTimeout, "request body not received in time"
	case errors.As(err, &cbe), errors.Is(err, io.ErrUnexpectedEOF):
		// Nothing was stored; the client sent a broken or short body.
		return http.StatusBadRequest, wire.CodeBadRequest, fmt.Sprintf("request body could not be read: %v", err)
	case errors.Is(err, kv.ErrTooLarge):
		return http.StatusRequestEntityTooLarge, wire.CodeValueTooLarge,
			err.Error() + "; the server's size_limit is split evenly across its fanout databases (PATCH /v1/settings raises it)"
	case errors.Is(err, kv.ErrFull):
		return http.StatusInsufficientStorage, wire.CodeCollectionFull,
			err.Error() + "; remove items from it, or raise --collection-max-bytes"
	case engine.IsNoSpace(err):
		return http.StatusInsufficientStorage, wire.CodeInsufficientStorage, diskFullMessage
	case errors.Is(err, kv.ErrTimeout):
		return http.StatusServiceUnavailable, wire.CodeTimeout, "database busy: " + err.Error()
	case errors.Is(err, kv.ErrNotFound):
		return http.StatusNotFound, wire.CodeNotFound, err.Error()
	case errors.Is(err, kv.ErrQueueFull):
		return http.StatusConflict, wire.CodeQueueFull, err.Error()
	case errors.Is(err, kv.ErrEmpty):
		return http.StatusNotFound, wire.CodeEmpty, err.Error()
	case errors.Is(err, kv.ErrNotNumeric):
		return http.StatusConflict, wire.CodeNotNumeric, err.Error()
	case errors.Is(err, kv.ErrOverflow):
		return http.StatusConflict, wire.CodeOverflow, err.Error()
	case errors.Is(err, kv.ErrInvalidKey):
		return http.StatusBadRequest, wire.CodeBadKey, err.Error()
	case errors.Is(err, kv.ErrInvalidValue):
		return http.StatusBadRequest, wire.CodeBadValue, err.Error()
	case errors.Is(err, kv.ErrInvalidSetting):
		return http.StatusBadRequest, wire.CodeBadSetting, err.Error()
	case errors.Is(err, kv.ErrInvalidName):
		return http.StatusBadRequest, wire.CodeBadName, err.Error()
	case errors.Is(err, kv.ErrNotOwner), errors.Is(err, kv.ErrOverRelease):
		return http.StatusConflict, wire.CodeNotOwner, err.Error()
	case errors.Is(err, kv.ErrWrongType):
		return http.StatusConflict, wire.CodeWrongType, err.Error()
	case errors.Is(err, kv.ErrClosed):
		return http.StatusServiceUnavailable, wire.CodeUnavailable, "server is shutting down"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, wire.CodeTimeout, "request timed out"
	case errors.Is(err, kv.ErrAbandoned):
		return statusClientGone, wire.CodeTimeout, "request canceled: its client closed the connection"
	case errors.Is(err, context.Canceled):
		return statusClientGone, wire.CodeTimeout, "request canceled"
	}
	return http.StatusInternalServerError, wire.CodeInternal, "internal error; see the server log"
}
