package kv

// WarningKind classifies what Check found.
type WarningKind string

// Kinds of Check warnings.
const (
	WarnIntegrity    WarningKind = "integrity"
	WarnFileSize     WarningKind = "file-size"
	WarnFileMissing  WarningKind = "file-missing"
	WarnUnknownFile  WarningKind = "unknown-file"
	WarnEmptyDir     WarningKind = "empty-directory"
	WarnCountMismach WarningKind = "count"
	WarnSizeMismatch WarningKind = "size"
)

// Warning is one problem Check found (and fixed, when asked to).
type Warning struct {
	Kind    WarningKind `json:"kind"`
	Message string      `json:"message"`
	Path    string      `json:"path,omitempty"`
}
