package cacheserver

import (
	"errors"
	"fmt"
	"strings"
)

// checkQuery refuses a query string that url.ParseQuery fails on (a ';',
// or a '%' not followed by two hex digits). URL.Query drops such pairs
// without a word, so a set would be stored without the expire or tag it
// was sent with. It allocates nothing: most sets carry a query.
func checkQuery(raw string) error {
	if strings.IndexByte(raw, ';') >= 0 {
		return errors.New("malformed query: pairs are separated by '&', not ';'")
	}
	for i := 0; i < len(raw); i++ {
		if raw[i] != '%' {
			continue
		}
		if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
			return fmt.Errorf("malformed query: %q is not a percent-escape", raw[i:min(i+3, len(raw))])
		}
		i += 2
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}
