package main

import (
	"fmt"
	"net"
	"os"
)

// sdNotify sends a state ("READY=1", "STOPPING=1") to systemd when it runs
// callbox as a Type=notify service; elsewhere NOTIFY_SOCKET is unset and this
// does nothing. The protocol is one datagram on a unix socket, so it is
// written out here rather than pulled in as a dependency.
func sdNotify(state string) error {
	path := os.Getenv("NOTIFY_SOCKET")
	if path == "" {
		return nil
	}
	if path[0] == '@' { // abstract namespace
		path = "\x00" + path[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", state, err)
	}
	return nil
}
