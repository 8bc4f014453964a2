//go:build !linux

package frames

import "net"

// alive cannot peek here: a closed pooled connection shows when it is used
// (a GET is then sent again on a fresh one).
func alive(net.Conn) bool { return true }

func isReset(error) bool { return false }
