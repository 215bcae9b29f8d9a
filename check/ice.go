package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/pion/stun/v3"
)

// iceURI is one URL of the ICE servers, with the credentials it came with.
type iceURI struct {
	raw        string
	uri        *stun.URI
	username   string
	credential string
}

// iceSet is what the hub handed out.
type iceSet struct {
	uris    []iceURI
	expires time.Time // zero when the welcome gave none
}

// find returns the first URI of scheme (and transport, for turn:).
func (s iceSet) find(scheme stun.SchemeType, proto stun.ProtoType) (iceURI, bool) {
	for _, u := range s.uris {
		if u.uri.Scheme == scheme && (proto == stun.ProtoTypeUnknown || u.uri.Proto == proto) {
			return u, true
		}
	}
	return iceURI{}, false
}

// parseICE reads the welcome's iceServers; URLs pion cannot parse are
// returned as bad (browsers would reject them too).
func parseICE(servers []iceServer, expiresMS int64) (set iceSet, bad []string) {
	for _, s := range servers {
		for _, raw := range s.URLs {
			u, err := stun.ParseURI(raw)
			if err != nil {
				bad = append(bad, raw)
				continue
			}
			// turns: without ?transport is TCP; pion leaves it as parsed.
			if u.Scheme == stun.SchemeTypeTURNS {
				u.Proto = stun.ProtoTypeTCP
			}
			set.uris = append(set.uris, iceURI{raw: raw, uri: u, username: s.Username, credential: s.Credential})
		}
	}
	if expiresMS > 0 {
		set.expires = time.UnixMilli(expiresMS)
	}
	return set, bad
}

func (r *runner) checkICE() {
	if r.welcome == nil {
		r.add(NameICE, Skip, "skipped: no welcome from the hub (see websocket)", "")
		return
	}
	set, bad := parseICE(r.welcome.ICEServers, r.welcome.ICEExpires)
	r.ice = set
	var names []string
	for _, u := range set.uris {
		names = append(names, u.raw)
	}
	_, hasSTUN := set.find(stun.SchemeTypeSTUN, stun.ProtoTypeUnknown)
	turnUDP, hasTURN := set.find(stun.SchemeTypeTURN, stun.ProtoTypeUDP)
	_, hasTCP := set.find(stun.SchemeTypeTURN, stun.ProtoTypeTCP)
	_, hasTLS := set.find(stun.SchemeTypeTURNS, stun.ProtoTypeUnknown)
	detail := strings.Join(names, ", ")
	if detail == "" {
		detail = "none"
	}
	now := r.opts.Now()
	if !set.expires.IsZero() {
		detail += fmt.Sprintf("; credentials expire %s (in %s)", set.expires.UTC().Format("2006-01-02 15:04 MST"), set.expires.Sub(now).Round(time.Minute))
	}
	if hasTLS {
		detail += "; turns: offered"
	}
	switch {
	case len(bad) > 0:
		r.add(NameICE, Fail, detail+"; unparseable: "+strings.Join(bad, ", "), "fix turn.host: it must be a bare host name or IP address")
	case !hasTURN:
		r.add(NameICE, Fail, detail, "no turn: URI over UDP: peers behind strict NATs and firewalls cannot connect without a relay; check [turn]")
	case turnUDP.username == "" || turnUDP.credential == "":
		r.add(NameICE, Fail, detail+"; the turn: URIs come without credentials", "the hub must hand out TURN credentials: check turn.secrets")
	case !set.expires.IsZero() && !set.expires.After(now):
		r.add(NameICE, Fail, detail, "the credentials are already expired: check the clocks of the server and this machine (NTP)")
	case !hasSTUN:
		r.add(NameICE, Warn, detail, "no stun: URI: browsers learn their public address from the TURN server only")
	case !hasTCP:
		r.add(NameICE, Warn, detail, "no turn: URI over TCP: networks that block UDP get no relay")
	default:
		r.add(NameICE, OK, detail, "")
	}
}

// resolve4 finds the IPv4 address of a STUN/TURN host, as pion's clients
// dial (they relay over IPv4 only).
func (r *runner) resolve4(ctx context.Context, host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil
	}
	sctx, cancel := r.step(ctx)
	defer cancel()
	addrs, err := r.opts.Resolver.LookupNetIP(sctx, "ip4", host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("resolve %s: %w", host, err)
	}
	if len(addrs) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %s: no IPv4 address", host)
	}
	return addrs[0].Unmap(), nil
}

// serverLoopback: a server on loopback is being checked from its own host,
// where loopback mapped and relay addresses are expected.
func (r *runner) serverLoopback(ip netip.Addr) bool {
	return ip.IsLoopback() || r.target.Loopback()
}

func (r *runner) checkSTUN(ctx context.Context) {
	u, ok := r.ice.find(stun.SchemeTypeSTUN, stun.ProtoTypeUnknown)
	switch {
	case r.welcome == nil && len(r.ice.uris) == 0:
		r.add(NameSTUN, Skip, "skipped: no ICE servers (see websocket)", "")
		return
	case !ok:
		r.add(NameSTUN, Skip, "skipped: no stun: URI handed out", "")
		return
	}
	ip, err := r.resolve4(ctx, u.uri.Host)
	if err != nil {
		r.add(NameSTUN, Fail, fmt.Sprintf("%s: %v", u.raw, err), "turn.host must be a name that resolves to the server's public IPv4 address")
		return
	}
	addr := netip.AddrPortFrom(ip, uint16(u.uri.Port))
	sctx, cancel := r.step(ctx)
	defer cancel()
	start := time.Now()
	mapped, err := stunBinding(sctx, addr)
	if err != nil {
		r.add(NameSTUN, Fail, fmt.Sprintf("Binding to UDP %s: %s", addr, describeNetErr(sctx, err)), udpAdvice(addr, err))
		return
	}
	took := time.Since(start).Round(time.Millisecond)
	detail := fmt.Sprintf("UDP %s answered in %s: mapped address %s", addr, took, mapped)
	switch {
	case public(mapped.Addr()):
		r.add(NameSTUN, OK, detail+" (this machine's public address)", "")
	case r.serverLoopback(ip):
		r.add(NameSTUN, Warn, detail+" (loopback: the server runs on this machine)", "check from another network to see a public mapped address")
	default:
		r.add(NameSTUN, Warn, detail+" (not public: this machine shares a private network with the server)", "check from outside the server's network too")
	}
}

func udpAdvice(addr netip.AddrPort, err error) string {
	if isRefused(err) {
		return fmt.Sprintf("nothing listens on UDP %s: is callbox running, with turn.listen on port %d?", addr, addr.Port())
	}
	return fmt.Sprintf("open UDP port %d in the server's firewall (and the cloud provider's security group), and check turn.listen", addr.Port())
}

// stunBinding sends a Binding request to addr and returns the mapped
// address, retransmitting (RFC 5389 7.2.1, RTO 250 ms doubling) until ctx
// ends. The socket is connected so that an ICMP port-unreachable comes
// back as "connection refused" instead of a silent timeout.
func stunBinding(ctx context.Context, addr netip.AddrPort) (netip.AddrPort, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr.String())
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("check: dial udp %s: %w", addr, err)
	}
	defer c.Close()
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("check: build binding: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 1500)
	rto := 250 * time.Millisecond
	for {
		if _, err := c.Write(req.Raw); err != nil {
			return netip.AddrPort{}, fmt.Errorf("check: send binding to %s: %w", addr, err)
		}
		c.SetReadDeadline(time.Now().Add(rto))
		for {
			n, err := c.Read(buf)
			if err != nil {
				if ctx.Err() != nil {
					return netip.AddrPort{}, fmt.Errorf("check: binding to %s: %w", addr, ctx.Err())
				}
				if isTimeout(err) {
					break // retransmit
				}
				return netip.AddrPort{}, fmt.Errorf("check: binding to %s: %w", addr, err)
			}
			res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
			if res.Decode() != nil || res.TransactionID != req.TransactionID {
				continue // not ours
			}
			if res.Type != stun.BindingSuccess {
				return netip.AddrPort{}, fmt.Errorf("check: binding to %s answered %s", addr, res.Type)
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(res); err != nil {
				return netip.AddrPort{}, fmt.Errorf("check: binding answer from %s: %w", addr, err)
			}
			ip, ok := netip.AddrFromSlice(xor.IP)
			if !ok {
				return netip.AddrPort{}, errors.New("check: binding answer with a bad address")
			}
			return netip.AddrPortFrom(ip.Unmap(), uint16(xor.Port)), nil
		}
		rto = min(2*rto, 2*time.Second)
	}
}
