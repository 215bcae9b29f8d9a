package turnserver

// How callbox authenticates with several secrets although pion's
// AuthHandler returns a single key and never sees the message.
//
// pion/turn v4.1.4 (server.go readLoop, internal/server HandleRequest)
// reads one datagram from a listener's net.PacketConn and handles it to the
// end, AuthHandler included, on the same goroutine before it reads the next
// one. TCP is the same per connection: STUNConn.ReadFrom hands out one frame
// per call, and that connection's goroutine handles it before reading on.
// So callbox wraps what it gives pion (the UDP sockets and each accepted TCP
// conn): the wrapper sees every STUN request just before pion does, parses
// it with pion/stun, checks MESSAGE-INTEGRITY against each secret's key and
// leaves the verdict in a slot that belongs to that socket or conn. pion then
// calls the AuthHandler for that very message; callbox runs one pion Server
// per UDP socket so each AuthHandler closure knows its slot, and the TCP
// handler finds the conn's slot by remote address. The handler takes the
// verdict and returns the key that matched. A verdict is overwritten by the
// next request read on the same socket, so one pion never asked about
// (a stale nonce is answered before the AuthHandler) cannot leak onto
// another message; the handler also checks username and realm match.
//
// The wrapper also applies the peer policy to CreatePermission and
// ChannelBind before pion sees them: pion answers its PermissionHandler's
// refusals with 401 or a bare error, callbox answers 403 as RFC 5766 says.

import (
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v3"
)

// Reasons an authenticated request is refused, as metric labels.
const (
	authBadUsername = "bad_username"
	authWrongRealm  = "wrong_realm"
	authIntegrity   = "bad_integrity" // no secret's key matches: wrong or removed secret, or wrong password
	authExpired     = "expired"
	authMaxLifetime = "max_lifetime" // expired, and the allocation is older than turn.max_allocation_lifetime
	authNoVerdict   = "no_verdict"   // pion asked about a message callbox did not see (should not happen)
)

var authReasons = []string{authBadUsername, authWrongRealm, authIntegrity, authExpired, authMaxLifetime, authNoVerdict}

// STUN request types that carry long-term credentials (class request, so
// the type equals the method).
const (
	typeAllocate         = 0x0003
	typeRefresh          = 0x0004
	typeCreatePermission = 0x0008
	typeChannelBind      = 0x0009
)

// verdict is what the wrapper learnt about the last authenticated request
// read on one socket or connection.
type verdict struct {
	set      bool
	src      netip.AddrPort
	username string
	realm    string
	key      []byte
	reason   string // empty when accepted
}

// verdictSlot holds the verdict between the wrapper and the AuthHandler.
// Both run on the same goroutine in pion today; the mutex makes that an
// optimisation rather than a requirement.
type verdictSlot struct {
	mu sync.Mutex
	v  verdict
}

func (s *verdictSlot) put(v verdict) {
	s.mu.Lock()
	s.v = v
	s.mu.Unlock()
}

func (s *verdictSlot) take() verdict {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.v
	s.v = verdict{}
	return v
}

// authenticator checks REST credentials against every configured secret.
type authenticator struct {
	// static after construction
	realm       string
	maxLifetime time.Duration
	policy      *peerPolicy
	allocs      *allocTable
	metrics     *metrics
	log         *slog.Logger
	limiter     *logLimiter

	secrets atomic.Pointer[[]string]
	// skew is added to the wall clock in expiry checks; tests move time
	// forward with it instead of sleeping past an expiry.
	skew atomic.Int64
}

func (a *authenticator) now() time.Time { return time.Now().Add(time.Duration(a.skew.Load())) }

// inspector is one reader's scratch space; each socket or conn has its own.
type inspector struct {
	msg  stun.Message
	slot verdictSlot
}

// isSTUN reports whether a frame is a STUN message (not ChannelData), by
// its first two bits and the magic cookie.
func isSTUN(b []byte) bool {
	return len(b) >= 20 && b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:8]) == magicCookie
}

// inspect looks at one frame a client sent before pion handles it. It
// records a verdict for authenticated requests and returns a reply when
// callbox answers the request itself (403 for a denied peer), in which case
// the frame must not reach pion.
func (a *authenticator) inspect(in *inspector, frame []byte, tcp bool, src, local netip.AddrPort) (reply []byte) {
	if !isSTUN(frame) {
		return nil
	}
	typ := binary.BigEndian.Uint16(frame[0:2])
	switch typ {
	case typeAllocate, typeRefresh, typeCreatePermission, typeChannelBind:
	default:
		return nil // Binding, Send indications and responses need no credentials
	}
	m := &in.msg
	// The full slice expression matters: MessageIntegrity.Check appends its
	// HMAC after the message, which on a TCP stream buffer would overwrite
	// the next frame.
	m.Raw = frame[:len(frame):len(frame)]
	if err := m.Decode(); err != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return nil // pion answers these itself (400 or 401 with a nonce)
	}
	var user stun.Username
	var realm stun.Realm
	if user.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return nil
	}
	v := a.verify(m, typ, user.String(), realm.String(), tcp, src, local)
	in.slot.put(v)
	if v.reason != "" || (typ != typeCreatePermission && typ != typeChannelBind) {
		return nil
	}
	reply = a.checkPeers(m, v, src)
	if reply != nil {
		in.slot.take() // pion never sees this request
	}
	return reply
}

func (a *authenticator) verify(m *stun.Message, typ uint16, username, realm string, tcp bool, src, local netip.AddrPort) verdict {
	v := verdict{set: true, src: src, username: username, realm: realm}
	if realm != a.realm {
		v.reason = authWrongRealm
		return v
	}
	expires, _, err := ParseUsername(username)
	if err != nil {
		v.reason = authBadUsername
		return v
	}
	for _, secret := range *a.secrets.Load() {
		key := longTermKey(username, realm, restPassword(secret, username))
		if stun.MessageIntegrity(key).Check(m) == nil {
			v.key = key
			break
		}
	}
	if v.key == nil {
		v.reason = authIntegrity
		return v
	}
	now := a.now()
	if !now.After(expires) {
		return v
	}
	// Expired. A new allocation is refused; one already running keeps
	// working, as in coturn and eturnal, but only for max_allocation_lifetime
	// after it was created.
	if typ == typeAllocate {
		v.reason = authExpired
		return v
	}
	created, ok := a.allocs.createdAt(allocKey{tcp: tcp, src: src, local: local})
	switch {
	case !ok:
		v.reason = authExpired
	case now.Sub(created) > a.maxLifetime:
		v.reason = authMaxLifetime
	}
	if v.reason != "" {
		v.key = nil
	}
	return v
}

// checkPeers applies the peer policy to every XOR-PEER-ADDRESS of an
// authenticated CreatePermission or ChannelBind and answers 403 if one is
// refused (RFC 5766 §9.2 and §11.2: the whole request fails). The nonce is
// pion's to check and is not checked here: the request's integrity is
// proven, and a replayed refusal only earns the same 403.
func (a *authenticator) checkPeers(m *stun.Message, v verdict, src netip.AddrPort) []byte {
	denied := ""
	var peer netip.Addr
	err := m.ForEach(stun.AttrXORPeerAddress, func(mm *stun.Message) error {
		var xa stun.XORMappedAddress
		if err := xa.GetFromAs(mm, stun.AttrXORPeerAddress); err != nil {
			return err
		}
		ip, _ := netip.AddrFromSlice(xa.IP)
		if ok, reason := a.policy.check(ip); !ok && denied == "" {
			denied, peer = reason, ip
		}
		return nil
	})
	if err != nil || denied == "" {
		return nil
	}
	a.metrics.peersDenied.WithLabelValues(denied).Inc()
	if a.limiter.allow(src.Addr()) {
		a.log.Warn("turn: peer refused", "src", src, "peer", peer, "reason", denied, "user", v.username,
			"note", "further refusals for this source are not logged for "+logInterval.String())
	}
	method := stun.MethodCreatePermission
	if binary.BigEndian.Uint16(m.Raw[0:2]) == typeChannelBind {
		method = stun.MethodChannelBind
	}
	resp, err := stun.Build(
		&stun.Message{TransactionID: m.TransactionID},
		stun.NewType(method, stun.ClassErrorResponse),
		&stun.ErrorCodeAttribute{Code: stun.CodeForbidden, Reason: []byte("Forbidden")},
		stun.MessageIntegrity(v.key),
	)
	if err != nil {
		return nil
	}
	return resp.Raw
}

// authHandler is the pion AuthHandler for one reader's slot: it returns
// the key the wrapper found, and counts and logs refusals.
func (a *authenticator) authHandler(slot *verdictSlot, username, realm string, src net.Addr) ([]byte, bool) {
	v := slot.take()
	ap := addrPortOf(src)
	switch {
	case !v.set || v.src != ap || v.username != username || v.realm != realm:
		v.reason = authNoVerdict
	case v.reason == "":
		return v.key, true
	}
	a.metrics.authFailures.WithLabelValues(v.reason).Inc()
	if a.limiter.allow(ap.Addr()) {
		// pion answers 400 to every auth failure, so this log line and the
		// metric are the only place the reason shows.
		a.log.Warn("turn: authentication failed", "src", ap, "user", username, "reason", v.reason,
			"note", "further failures for this source are not logged for "+logInterval.String())
	}
	return nil, false
}

func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch t := a.(type) {
	case *net.UDPAddr:
		ap = t.AddrPort()
	case *net.TCPAddr:
		ap = t.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// logInterval is how often one source address may cause a warning.
const logInterval = time.Minute

// maxLimited bounds the limiter's memory when many addresses misbehave at
// once; past it the map starts over, which at worst logs a few lines more.
const maxLimited = 4096

// logLimiter lets a source address log once per logInterval so a client
// retrying bad credentials, or an attacker, cannot flood the log.
type logLimiter struct {
	mu   sync.Mutex
	last map[netip.Addr]time.Time // guarded by mu
}

func newLogLimiter() *logLimiter { return &logLimiter{last: make(map[netip.Addr]time.Time)} }

func (l *logLimiter) allow(a netip.Addr) bool {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[a]; ok && now.Sub(t) < logInterval {
		return false
	}
	if len(l.last) >= maxLimited {
		for k, t := range l.last {
			if now.Sub(t) >= logInterval {
				delete(l.last, k)
			}
		}
		if len(l.last) >= maxLimited {
			clear(l.last)
		}
	}
	l.last[a] = now
	return true
}

// magicCookie is RFC 5389's fixed value at bytes 4-8 of a STUN header.
const magicCookie = 0x2112A442
