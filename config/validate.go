package config

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// PortRange is an inclusive range of ports written "MIN-MAX".
type PortRange struct {
	Min, Max uint16
}

// UnmarshalText parses "49152-65535".
func (r *PortRange) UnmarshalText(text []byte) error {
	lo, hi, ok := strings.Cut(string(text), "-")
	if !ok {
		return fmt.Errorf("port range %q: want MIN-MAX, as \"49152-65535\"", text)
	}
	min, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	max, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err1 != nil || err2 != nil || min == 0 {
		return fmt.Errorf("port range %q: ports must be numbers from 1 to 65535", text)
	}
	if min > max {
		return fmt.Errorf("port range %q: MIN is above MAX", text)
	}
	r.Min, r.Max = uint16(min), uint16(max)
	return nil
}

// MarshalText writes the range back as "MIN-MAX".
func (r PortRange) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

func (r PortRange) String() string { return fmt.Sprintf("%d-%d", r.Min, r.Max) }

// Validate checks every bound and names the key that breaks one.
func (c *Config) Validate() error {
	checks := []func() error{c.HTTP.validate, c.TURN.validate, c.Signal.validate, c.TLS.validate, c.Metrics.validate, c.Log.validate, c.Cluster.validate}
	for _, check := range checks {
		if err := check(); err != nil {
			return err
		}
	}
	return c.validateTLSUsers()
}

// validateTLSUsers checks the keys that need a certificate against [tls].
func (c *Config) validateTLSUsers() error {
	tlsOn := c.TLS.CertFile != "" || len(c.TLS.ACMEDomains) > 0
	switch {
	case c.HTTP.HTTPSListen != "" && !tlsOn:
		return keyErr("http.https_listen", "needs a certificate: set tls.cert_file and tls.key_file, or tls.acme_domains")
	case c.TURN.TLSListen != "" && !tlsOn:
		return keyErr("turn.tls_listen", "needs a certificate: set tls.cert_file and tls.key_file, or tls.acme_domains")
	case c.TURN.TLSOnHTTPS && c.HTTP.HTTPSListen == "":
		return keyErr("turn.tls_on_https", "needs http.https_listen (the port it shares)")
	}
	return nil
}

func (h *HTTP) validate() error {
	if err := validHostPort("http.listen", h.Listen, false); err != nil {
		return err
	}
	if err := validHostPort("http.https_listen", h.HTTPSListen, true); err != nil {
		return err
	}
	return validHostPort("http.redirect_listen", h.RedirectListen, true)
}

func (t *TURN) validate() error {
	if err := validHostPort("turn.listen", t.Listen, false); err != nil {
		return err
	}
	if err := validHostPort("turn.tls_listen", t.TLSListen, true); err != nil {
		return err
	}
	if t.PublicIP != "" {
		if _, err := netip.ParseAddr(t.PublicIP); err != nil {
			return keyErr("turn.public_ip", "%q is not an IP address", t.PublicIP)
		}
	}
	if strings.ContainsAny(t.Host, " /?#@") {
		return keyErr("turn.host", "%q is not a host name", t.Host)
	}
	if t.RelayPorts.Min == 0 {
		return keyErr("turn.relay_ports", "must be set, as \"49152-65535\"")
	}
	if t.Realm == "" {
		return keyErr("turn.realm", "must not be empty")
	}
	for i, s := range t.Secrets {
		if len(s) < 16 {
			return keyErr("turn.secrets", "secret %d is %d characters; must be >= 16", i+1, len(s))
		}
	}
	if t.CredentialTTL < time.Minute || t.CredentialTTL > 30*24*time.Hour {
		return keyErr("turn.credential_ttl", "%s is out of range; must be between 1m and 720h", t.CredentialTTL)
	}
	if t.MaxAllocationLifetime < t.CredentialTTL {
		return keyErr("turn.max_allocation_lifetime", "%s is shorter than turn.credential_ttl (%s); must be >= it", t.MaxAllocationLifetime, t.CredentialTTL)
	}
	if t.UserQuota < 0 {
		return keyErr("turn.user_quota", "%d is negative; must be >= 0 (0 is unlimited)", t.UserQuota)
	}
	if t.TotalQuota < 0 {
		return keyErr("turn.total_quota", "%d is negative; must be >= 0 (0 is unlimited)", t.TotalQuota)
	}
	if t.MaxBitrate < 0 {
		return keyErr("turn.max_bitrate", "%d is negative; must be >= 0 (0 is unlimited)", t.MaxBitrate)
	}
	if t.MaxBitrate > 0 && t.MaxBitrate < 8000 {
		return keyErr("turn.max_bitrate", "%d bit/s is too low to carry a call; must be 0 or >= 8000", t.MaxBitrate)
	}
	if t.UDPSockets < 0 || t.UDPSockets > 256 {
		return keyErr("turn.udp_sockets", "%d is out of range; must be between 0 (one per core) and 256", t.UDPSockets)
	}
	if t.BusyNice < -20 || t.BusyNice > 0 {
		return keyErr("turn.busy_nice", "%d is out of range; must be between -20 (highest priority) and 0 (off)", t.BusyNice)
	}
	return nil
}

func (s *Signal) validate() error {
	switch s.Access {
	case AccessOpen:
	case AccessPassword:
		if len(s.Password) < 8 {
			return keyErr("signal.password", "must be at least 8 characters when signal.access is \"password\"")
		}
	case AccessInvite:
		if len(s.InviteSecret) < 16 {
			return keyErr("signal.invite_secret", "must be at least 16 characters when signal.access is \"invite\"")
		}
	default:
		return keyErr("signal.access", "%q is not one of \"open\", \"password\", \"invite\"", s.Access)
	}
	for _, o := range s.Origins {
		if o == "" || strings.ContainsAny(o, " /") {
			return keyErr("signal.origins", "%q is not a host (as \"example.com\" or \"example.com:8443\")", o)
		}
	}
	for i, k := range s.APIKeys {
		if len(k) < 16 {
			return keyErr("signal.api_keys", "key %d is %d characters; must be >= 16", i+1, len(k))
		}
	}
	type bound struct {
		key      string
		val      int
		min, max int
	}
	for _, b := range []bound{
		{"signal.history", s.History, 0, 10000},
		{"signal.max_message_bytes", s.MaxMessageBytes, 1024, 1 << 20},
		{"signal.message_burst", s.MessageBurst, 1, 100000},
		{"signal.max_peers_per_room", s.MaxPeersPerRoom, 2, 1000},
		{"signal.max_rooms", s.MaxRooms, 1, 10000000},
		{"signal.max_connections_per_ip", s.MaxConnectionsPerIP, 1, 10000000},
		{"signal.send_queue", s.SendQueue, 8, 100000},
	} {
		if b.val < b.min || b.val > b.max {
			return keyErr(b.key, "%d is out of range; must be between %d and %d", b.val, b.min, b.max)
		}
	}
	if s.MessagesPerSecond <= 0 {
		return keyErr("signal.messages_per_second", "%g must be > 0", s.MessagesPerSecond)
	}
	if s.ResumeWindow < 0 || s.ResumeWindow > time.Hour {
		return keyErr("signal.resume_window", "%s is out of range; must be between 0s and 1h", s.ResumeWindow)
	}
	if s.PingInterval < time.Second || s.PingInterval > 55*time.Second {
		return keyErr("signal.ping_interval", "%s is out of range; must be between 1s and 55s (proxies cut idle sockets at 60s)", s.PingInterval)
	}
	if s.ShutdownTimeout < 0 || s.ShutdownTimeout > 5*time.Minute {
		return keyErr("signal.shutdown_timeout", "%s is out of range; must be between 0s and 5m", s.ShutdownTimeout)
	}
	return nil
}

func (t *TLS) validate() error {
	if (t.CertFile == "") != (t.KeyFile == "") {
		// Name the key that is set: it has a line to point at.
		if t.CertFile == "" {
			return keyErr("tls.key_file", "is set but tls.cert_file is not; set both or neither")
		}
		return keyErr("tls.cert_file", "is set but tls.key_file is not; set both or neither")
	}
	if len(t.ACMEDomains) == 0 {
		return nil
	}
	if t.CertFile != "" {
		return keyErr("tls.acme_domains", "cannot be used with tls.cert_file and tls.key_file; set one or the other")
	}
	seen := make(map[string]bool, len(t.ACMEDomains))
	for _, d := range t.ACMEDomains {
		if err := validDomain(d); err != nil {
			return keyErr("tls.acme_domains", "%q %v", d, err)
		}
		if seen[strings.ToLower(d)] {
			return keyErr("tls.acme_domains", "%q is listed twice", d)
		}
		seen[strings.ToLower(d)] = true
	}
	if t.ACMEEmail != "" && (strings.Count(t.ACMEEmail, "@") != 1 || strings.ContainsAny(t.ACMEEmail, " <>,;:") ||
		strings.HasPrefix(t.ACMEEmail, "@") || strings.HasSuffix(t.ACMEEmail, "@")) {
		return keyErr("tls.acme_email", "%q is not an email address", t.ACMEEmail)
	}
	u, err := url.Parse(t.ACMECA)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return keyErr("tls.acme_ca", "%q must be an https:// directory URL, as %q", t.ACMECA, LetsEncrypt)
	}
	if t.ACMEStorage == "" {
		return keyErr("tls.acme_storage", "must be set when tls.acme_domains is")
	}
	return nil
}

// validDomain accepts the names HTTP-01 and TLS-ALPN-01 can prove: DNS
// names, no wildcards (those need DNS-01), no IP addresses, no ports.
func validDomain(d string) error {
	if _, err := netip.ParseAddr(d); err == nil {
		return fmt.Errorf("is an IP address; must be a domain name")
	}
	if strings.HasPrefix(d, "*.") {
		return fmt.Errorf("is a wildcard; only DNS-01, which callbox does not do, can prove one: list each name")
	}
	if len(d) == 0 || len(d) > 253 || !strings.Contains(d, ".") {
		return fmt.Errorf("is not a domain name (as \"call.example.com\")")
	}
	for _, label := range strings.Split(d, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("is not a domain name (as \"call.example.com\")")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("has %q; a domain name has letters, digits, '-' and '.'", c)
			}
		}
	}
	return nil
}

func (m *Metrics) validate() error {
	return validHostPort("metrics.listen", m.Listen, true)
}

func (l *Log) validate() error {
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		return keyErr("log.level", "%q is not one of \"debug\", \"info\", \"warn\", \"error\"", l.Level)
	}
	switch l.Format {
	case "text", "json":
	default:
		return keyErr("log.format", "%q is not one of \"text\", \"json\"", l.Format)
	}
	return nil
}

func (c *Cluster) validate() error {
	for _, u := range c.NATS {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || !(p.Scheme == "nats" || p.Scheme == "tls" || p.Scheme == "ws" || p.Scheme == "wss") {
			return keyErr("cluster.nats", "%q is not a NATS URL, as \"nats://10.0.0.1:4222\"", u)
		}
	}
	for _, r := range c.Node {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return keyErr("cluster.node", "%q may hold only A-Z a-z 0-9 - _ (it is part of NATS subjects)", c.Node)
		}
	}
	if len(c.Node) > 64 {
		return keyErr("cluster.node", "is %d characters; must be <= 64", len(c.Node))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return keyErr("cluster.tls_cert", "cluster.tls_cert and cluster.tls_key go together; set both or neither")
	}
	if c.Password != "" && c.User == "" {
		return keyErr("cluster.password", "is set but cluster.user is not")
	}
	for _, u := range c.TURNURIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			return keyErr("cluster.turn_uris", "%q is not a turn: or turns: URI", u)
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return keyErr("cluster.replicas", "%d is out of range; must be between 1 and 5", c.Replicas)
	}
	if c.Heartbeat < 50*time.Millisecond || c.Heartbeat > time.Minute {
		return keyErr("cluster.heartbeat", "%s is out of range; must be between 50ms and 1m", c.Heartbeat)
	}
	return nil
}

func validHostPort(key, addr string, emptyOK bool) error {
	if addr == "" {
		if emptyOK {
			return nil
		}
		return keyErr(key, "must be set, as \"127.0.0.1:8080\"")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return keyErr(key, "%q is not HOST:PORT: %v", addr, err)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			return keyErr(key, "%q: host must be an IP address", addr)
		}
	}
	// Port 0 (the kernel picks) is allowed: tests rely on it.
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return keyErr(key, "%q: port must be a number from 0 to 65535", addr)
	}
	return nil
}

// lineOf finds the line on which a dotted key ("turn.relay_ports") is set,
// or 0. The decoder keeps key positions to itself, so this reads the text.
func lineOf(data []byte, dotted string) int {
	table, key := "", dotted
	if i := strings.LastIndexByte(dotted, '.'); i >= 0 {
		table, key = dotted[:i], dotted[i+1:]
	}
	current := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			current = strings.Trim(line, "[] ")
			if current == dotted {
				return n
			}
			continue
		}
		k, _, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k = strings.Trim(strings.TrimSpace(k), `"`)
		if (current == table && k == key) || (current == "" && k == dotted) {
			return n
		}
	}
	return 0
}
