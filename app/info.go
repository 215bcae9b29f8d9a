package app

import (
	"encoding/json"
	"net/http"

	"github.com/callbox/callbox/turnserver"
)

// info is GET /api/info: what a browser (the /check page) or an operator
// needs to diagnose the deployment from outside. It carries no secrets
// and no private addresses of the host.
type info struct {
	TLS  bool     `json:"tls"`
	TURN turnInfo `json:"turn"`
}

type turnInfo struct {
	// RelayAddress is the address in relay candidates (public anyway).
	RelayAddress string `json:"relayAddress"`
	// PublicIPSet is whether turn.public_ip is configured.
	PublicIPSet bool `json:"publicIpSet"`
	// AddressProblem is non-empty when clients outside the host's network
	// cannot reach relays: set turn.public_ip.
	AddressProblem string   `json:"addressProblem,omitempty"`
	URIs           []string `json:"uris"`
	STUN           []string `json:"stun"`
	// RelaysIPv6 is always false: pion/turn v4 relays over IPv4 only.
	RelaysIPv6 bool `json:"relaysIpv6"`
}

func (a *App) serveInfo(w http.ResponseWriter, r *http.Request) {
	cfg := a.cfg.Load()
	v := info{
		TLS: a.certs.Enabled(),
		TURN: turnInfo{
			RelayAddress:   a.turn.RelayAddress().String(),
			PublicIPSet:    cfg.TURN.PublicIP != "",
			AddressProblem: a.turn.AddressProblem(),
			URIs:           a.turn.TURNURIs(),
			STUN:           a.turn.STUNURIs(),
		},
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(v) //nolint:errcheck // the client went away
}

// logHostAddresses says at start-up what the host's addresses mean for
// clients: IPv6 is reachable for signaling and TURN's listeners where they
// listen on it, but relays are IPv4 (pion/turn v4 has no RFC 6156).
func (a *App) logHostAddresses() {
	var v6 []string
	for _, ip := range turnserver.HostAddrs() {
		if ip.Is6() && ip.IsGlobalUnicast() && !ip.IsPrivate() {
			v6 = append(v6, ip.String())
		}
	}
	if len(v6) > 0 {
		a.log.Info("host has global IPv6 addresses: listeners on \":PORT\" or \"[::]:PORT\" accept IPv6 clients; relays stay IPv4 (pion/turn v4)", "ipv6", v6)
	}
}
