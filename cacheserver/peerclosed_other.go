//go:build !linux

package cacheserver

import "net"

// peerClosed is false where the TCP state is not read (Linux only).
func peerClosed(net.Conn) bool { return false }
