package turnserver

import (
	"net"
	"net/netip"
	"strconv"

	"github.com/callbox/callbox/config"
)

// ConfiguredTURNURIs are the turn: URIs for cfg as written (its listen port,
// not one the kernel chose), for commands that mint credentials without
// running a server, such as `callbox credentials`.
func ConfiguredTURNURIs(cfg config.TURN) []string {
	listenIP, port, err := parseListen(cfg.Listen)
	if err != nil {
		return nil
	}
	host := cfg.Host
	if host == "" {
		relayIP, err := relayAddress(cfg.PublicIP, listenIP)
		if err != nil {
			return nil
		}
		host = uriHost(cfg, listenIP, relayIP)
	}
	uris := turnURIs(host, int(port))
	// turns: only with turn.host, the certificate's name: an IP address
	// would fail the browser's certificate check.
	if cfg.TLSListen != "" && cfg.Host != "" {
		if _, tlsPort, err := net.SplitHostPort(cfg.TLSListen); err == nil && tlsPort != "0" {
			uris = append(uris, "turns:"+net.JoinHostPort(cfg.Host, tlsPort)+"?transport=tcp")
		}
	}
	return uris
}

// uriHost is the host clients are told to reach: turn.host, else the
// public IP, else the listen IP, else (listening on all addresses) the
// relay IP.
func uriHost(cfg config.TURN, listenIP, relayIP netip.Addr) string {
	switch {
	case cfg.Host != "":
		return cfg.Host
	case cfg.PublicIP == "" && !listenIP.IsUnspecified():
		return listenIP.String()
	default:
		return relayIP.String()
	}
}

func turnURIs(host string, port int) []string {
	hp := net.JoinHostPort(host, strconv.Itoa(port))
	return []string{"turn:" + hp + "?transport=udp", "turn:" + hp + "?transport=tcp"}
}
