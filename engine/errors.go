package engine

import "errors"

// ErrCorrupt reports a row whose columns contradict each other. The errors
// callers classify (timeouts, bad keys and values, ...) are kv's sentinels.
var ErrCorrupt = errors.New("corrupt row")
