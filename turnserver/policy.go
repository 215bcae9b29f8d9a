package turnserver

import (
	"net/netip"

	"github.com/callbox/callbox/config"
)

// Reasons a peer address is refused; they are metric labels, so the set is
// fixed and small.
const (
	denyLoopback      = "loopback"
	denyThisNetwork   = "this_network" // 0.0.0.0/8, ::/128
	denyPrivate       = "private"      // RFC 1918
	denyCGNAT         = "cgnat"
	denyLinkLocal     = "link_local" // includes 169.254.169.254, cloud metadata
	denyULA           = "ula"
	denyMulticast     = "multicast"
	denyReserved      = "reserved"
	denyDocumentation = "documentation"
	denyBenchmarking  = "benchmarking"
	denyIETF          = "ietf_protocol"
	denyConfigured    = "configured" // turn.denied_peers
	denyInvalid       = "invalid"
)

var denyReasons = []string{
	denyLoopback, denyThisNetwork, denyPrivate, denyCGNAT, denyLinkLocal, denyULA,
	denyMulticast, denyReserved, denyDocumentation, denyBenchmarking, denyIETF,
	denyConfigured, denyInvalid,
}

type deniedRange struct {
	prefix netip.Prefix
	reason string
}

// builtinDenied is every special-purpose range (IANA IPv4 and IPv6
// special-purpose registries) through which a relay could reach the
// server's own network or something that is not a public peer. IPv6 forms
// that embed an IPv4 address never reach this list: normalise unwraps them
// first, so ::ffff:10.0.0.1 is judged as 10.0.0.1.
var builtinDenied = func() []deniedRange {
	list := []struct{ cidr, reason string }{
		{"0.0.0.0/8", denyThisNetwork},
		{"10.0.0.0/8", denyPrivate},
		{"100.64.0.0/10", denyCGNAT},
		{"127.0.0.0/8", denyLoopback},
		{"169.254.0.0/16", denyLinkLocal},
		{"172.16.0.0/12", denyPrivate},
		{"192.0.0.0/24", denyIETF},
		{"192.0.2.0/24", denyDocumentation},
		{"192.88.99.0/24", denyReserved}, // deprecated 6to4 relay anycast
		{"192.168.0.0/16", denyPrivate},
		{"198.18.0.0/15", denyBenchmarking},
		{"198.51.100.0/24", denyDocumentation},
		{"203.0.113.0/24", denyDocumentation},
		{"224.0.0.0/4", denyMulticast},
		{"240.0.0.0/4", denyReserved}, // includes 255.255.255.255 broadcast

		{"::/128", denyThisNetwork},
		{"::1/128", denyLoopback},
		{"::/96", denyReserved},              // IPv4-compatible leftovers normalise could not map
		{"64:ff9b:1::/48", denyReserved},     // local-use NAT64 (RFC 8215): embedding varies
		{"100::/64", denyReserved},           // discard-only
		{"2001::/23", denyIETF},              // Teredo, ORCHID, benchmarking 2001:2::/48...
		{"2001:db8::/32", denyDocumentation}, // also 3fff::/20 below
		{"3fff::/20", denyDocumentation},
		{"5f00::/16", denyReserved}, // SRv6 SIDs
		{"fc00::/7", denyULA},
		{"fe80::/10", denyLinkLocal},
		{"fec0::/10", denyReserved}, // deprecated site-local
		{"ff00::/8", denyMulticast},
	}
	out := make([]deniedRange, len(list))
	for i, e := range list {
		out[i] = deniedRange{netip.MustParsePrefix(e.cidr), e.reason}
	}
	return out
}()

var (
	nat64Prefix = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour   = netip.MustParsePrefix("2002::/16")
	v4Compat    = netip.MustParsePrefix("::/96")
	loopback6   = netip.IPv6Loopback()
)

// normalise returns the IPv4 address an IPv6 address embeds (IPv4-mapped,
// IPv4-compatible, NAT64 well-known prefix, 6to4), or the address itself.
// Relaying to any of these forms can end at the embedded IPv4 address, so
// that is the address the policy must judge.
func normalise(a netip.Addr) netip.Addr {
	a = a.WithZone("")
	if a.Is4() || a.Is4In6() {
		return a.Unmap()
	}
	b := a.As16()
	switch {
	case nat64Prefix.Contains(a):
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})
	case v4Compat.Contains(a) && a != loopback6 && !a.IsUnspecified():
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	return a
}

// peerPolicy decides which peer addresses an allocation may relay to. It
// is immutable after construction and safe for concurrent use.
type peerPolicy struct {
	allowed       []netip.Prefix
	denied        []netip.Prefix
	allowLoopback bool
}

func newPeerPolicy(cfg config.TURN) *peerPolicy {
	p := &peerPolicy{allowLoopback: cfg.AllowLoopbackPeers}
	// Operators may write IPv4-mapped prefixes; judge them in the same
	// normalised form as addresses.
	for _, pr := range cfg.AllowedPeers {
		p.allowed = append(p.allowed, normalisePrefix(pr))
	}
	for _, pr := range cfg.DeniedPeers {
		p.denied = append(p.denied, normalisePrefix(pr))
	}
	return p
}

func normalisePrefix(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

// check reports whether relaying to addr is allowed and, when it is not,
// why. Of turn.allowed_peers and turn.denied_peers the longest matching
// prefix wins (a tie denies), so an operator can allow 10.0.0.0/8 yet deny
// 10.0.0.1/32; when neither matches, the loopback switch and then the
// built-in list decide.
func (p *peerPolicy) check(addr netip.Addr) (ok bool, reason string) {
	if !addr.IsValid() {
		return false, denyInvalid
	}
	a := normalise(addr)
	allowBits, denyBits := longestMatch(p.allowed, a), longestMatch(p.denied, a)
	switch {
	case denyBits >= 0 && denyBits >= allowBits:
		return false, denyConfigured
	case allowBits >= 0:
		return true, ""
	}
	if a.IsLoopback() && p.allowLoopback {
		return true, ""
	}
	for _, r := range builtinDenied {
		if r.prefix.Contains(a) {
			return false, r.reason
		}
	}
	return true, ""
}

func longestMatch(list []netip.Prefix, a netip.Addr) int {
	best := -1
	for _, pr := range list {
		if pr.Bits() > best && pr.Contains(a) {
			best = pr.Bits()
		}
	}
	return best
}
