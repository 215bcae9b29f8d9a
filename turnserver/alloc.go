package turnserver

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// allocKey identifies an allocation as pion does (client address, server
// address), plus the transport: pion keeps UDP and TCP allocations in
// separate managers, so the same address pair can exist in both.
type allocKey struct {
	tcp        bool
	src, local netip.AddrPort
}

func allocKeyOf(src, local net.Addr) allocKey {
	_, tcp := src.(*net.TCPAddr)
	return allocKey{tcp: tcp, src: addrPortOf(src), local: addrPortOf(local)}
}

type allocEntry struct {
	user    string
	created time.Time
}

// pendingKey is a client between pion's QuotaHandler and its allocation
// event; the QuotaHandler sees only the client's address.
type pendingKey struct {
	tcp bool
	src netip.AddrPort
}

type pendingEntry struct {
	user string
	at   time.Time
}

// pendingTimeout: pion creates the allocation right after the
// QuotaHandler on the same goroutine, so a reservation this old means the
// creation failed (no relay port free) and its count must be returned.
const pendingTimeout = 10 * time.Second

// allocTable tracks allocations from pion's events: their creation time
// (for the post-expiry grace) and the per-user and total counts the quotas
// need. A quota check reserves a slot until the allocation exists, so
// concurrent Allocates on different sockets cannot overshoot the quota.
type allocTable struct {
	// static after construction
	userQuota, totalQuota int
	metrics               *metrics
	log                   *slog.Logger
	// remote and notify share the per-user quota with other servers
	// (Options.RemoteAllocations, Options.OnAllocations); nil: alone.
	remote func(user string) int
	notify func(user string, count int)

	mu      sync.Mutex
	allocs  map[allocKey]allocEntry     // guarded by mu
	pending map[pendingKey]pendingEntry // guarded by mu
	perUser map[string]int              // guarded by mu: allocations + reservations per user
	changed chan struct{}               // guarded by mu: closed and replaced on every deletion
}

func newAllocTable(userQuota, totalQuota int, m *metrics, log *slog.Logger) *allocTable {
	return &allocTable{
		userQuota:  userQuota,
		totalQuota: totalQuota,
		metrics:    m,
		log:        log,
		allocs:     make(map[allocKey]allocEntry),
		pending:    make(map[pendingKey]pendingEntry),
		perUser:    make(map[string]int),
		changed:    make(chan struct{}),
	}
}

// userOf is the quota key of a REST username: its USERID. A username that
// does not parse never gets here (authentication refuses it first), but
// falling back to the whole string keeps the count correct regardless.
func userOf(username string) string {
	if _, user, err := ParseUsername(username); err == nil {
		return user
	}
	return username
}

// reserve is pion's QuotaHandler.
func (t *allocTable) reserve(username string, src net.Addr) bool {
	_, tcp := src.(*net.TCPAddr)
	pk := pendingKey{tcp: tcp, src: addrPortOf(src)}
	user := userOf(username)
	now := time.Now()

	t.mu.Lock()
	defer t.mu.Unlock()
	for k, p := range t.pending {
		if k == pk || now.Sub(p.at) > pendingTimeout {
			t.releaseLocked(p.user)
			delete(t.pending, k)
		}
	}
	scope := ""
	switch {
	case t.totalQuota > 0 && len(t.allocs)+len(t.pending) >= t.totalQuota:
		scope = "total"
	case t.userQuota > 0 && t.perUser[user]+t.remoteOf(user) >= t.userQuota:
		scope = "user"
	}
	if scope != "" {
		t.metrics.quotaRejections.WithLabelValues(scope).Inc()
		t.log.Debug("turn: allocation quota reached", "scope", scope, "user", user, "src", pk.src)
		return false
	}
	t.pending[pk] = pendingEntry{user: user, at: now}
	t.perUser[user]++
	t.notifyLocked(user)
	return true
}

func (t *allocTable) remoteOf(user string) int {
	if t.remote == nil {
		return 0
	}
	return t.remote(user)
}

func (t *allocTable) notifyLocked(user string) {
	if t.notify != nil {
		t.notify(user, t.perUser[user])
	}
}

func (t *allocTable) releaseLocked(user string) {
	defer t.notifyLocked(user)
	if t.perUser[user] <= 1 {
		delete(t.perUser, user)
		return
	}
	t.perUser[user]--
}

func (t *allocTable) created(src, local net.Addr, username string, relay net.Addr) {
	k := allocKeyOf(src, local)
	pk := pendingKey{tcp: k.tcp, src: k.src}
	t.mu.Lock()
	user := userOf(username)
	if p, ok := t.pending[pk]; ok {
		delete(t.pending, pk)
		user = p.user
	} else {
		t.perUser[user]++
		t.notifyLocked(user)
	}
	t.allocs[k] = allocEntry{user: user, created: time.Now()}
	n := len(t.allocs)
	t.mu.Unlock()

	t.metrics.allocationsCreated.Inc()
	t.metrics.allocationsActive.Set(float64(n))
	t.log.Debug("turn: allocation created", "src", k.src, "tcp", k.tcp, "user", user, "relay", relay)
}

func (t *allocTable) deleted(src, local net.Addr) {
	k := allocKeyOf(src, local)
	t.mu.Lock()
	e, ok := t.allocs[k]
	if ok {
		delete(t.allocs, k)
		t.releaseLocked(e.user)
		close(t.changed)
		t.changed = make(chan struct{})
	}
	n := len(t.allocs)
	t.mu.Unlock()
	if ok {
		t.metrics.allocationsActive.Set(float64(n))
		t.log.Debug("turn: allocation deleted", "src", k.src, "tcp", k.tcp, "user", e.user)
	}
}

func (t *allocTable) createdAt(k allocKey) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.allocs[k]
	return e.created, ok
}

func (t *allocTable) count() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.allocs)
}

// waitEmpty returns when every allocation has been deleted or ctx ends.
// pion's per-allocation goroutine reports the deletion as its last act,
// so this is how Close waits for pion's goroutines it cannot join.
func (t *allocTable) waitEmpty(ctx context.Context) error {
	for {
		t.mu.Lock()
		n, ch := len(t.allocs), t.changed
		t.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
