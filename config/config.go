// Package config is callbox's configuration file: its schema, its defaults, a
// strict TOML decoder and the validation whose errors name the key, the line
// and the bound. It imports nothing else of callbox, so every package can take
// its own section.
package config

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole file. Every key is documented in config.example.toml.
type Config struct {
	HTTP    HTTP    `toml:"http"`
	TURN    TURN    `toml:"turn"`
	Signal  Signal  `toml:"signal"`
	TLS     TLS     `toml:"tls"`
	Metrics Metrics `toml:"metrics"`
	Log     Log     `toml:"log"`
	Cluster Cluster `toml:"cluster"`
}

// HTTP is the web server: the call page, the WebSocket hub and the APIs.
type HTTP struct {
	Listen string `toml:"listen"`
	// HTTPSListen serves the same handlers over TLS; empty is off. Needs [tls].
	HTTPSListen string `toml:"https_listen"`
	// RedirectListen answers ACME HTTP-01 and redirects to https (port 80); empty is off.
	RedirectListen string `toml:"redirect_listen"`
}

// TURN is the embedded STUN/TURN server.
type TURN struct {
	// Listen carries UDP and TCP on the same address.
	Listen string `toml:"listen"`
	// PublicIP is advertised in relay candidates (a VPS behind 1:1 NAT).
	PublicIP string `toml:"public_ip"`
	// Host is the name put in the turn: URIs handed to clients.
	Host       string    `toml:"host"`
	RelayPorts PortRange `toml:"relay_ports"`
	Realm      string    `toml:"realm"`
	// Secrets: the first signs new credentials, all of them verify.
	Secrets       []string      `toml:"secrets"`
	CredentialTTL time.Duration `toml:"credential_ttl"`
	// MaxAllocationLifetime bounds how long an allocation may keep
	// refreshing after its credential has expired.
	MaxAllocationLifetime time.Duration  `toml:"max_allocation_lifetime"`
	AllowLoopbackPeers    bool           `toml:"allow_loopback_peers"`
	AllowedPeers          []netip.Prefix `toml:"allowed_peers"`
	DeniedPeers           []netip.Prefix `toml:"denied_peers"`
	UserQuota             int            `toml:"user_quota"`
	TotalQuota            int            `toml:"total_quota"`
	// MaxBitrate is per allocation and direction, in bits per second; 0 is unlimited.
	MaxBitrate int64 `toml:"max_bitrate"`
	// UDPSockets is how many SO_REUSEPORT sockets share the UDP listen port; 0 means one per core.
	// The data plane reads them with one thread each, at most GOMAXPROCS-1 threads (turnserver.dataLoops).
	UDPSockets int `toml:"udp_sockets"`
	// BusyNice is the nice value a data-plane thread takes while it is busy
	// (turnserver/priority_linux.go); 0 leaves its priority alone.
	BusyNice int `toml:"busy_nice"`
	// TLSListen serves TURN over TLS (turns:, standard port 5349); empty is off. Needs [tls].
	TLSListen string `toml:"tls_listen"`
	// TLSOnHTTPS also serves TURN over TLS on http.https_listen, told
	// apart from HTTPS by the first bytes after the handshake.
	TLSOnHTTPS bool `toml:"tls_on_https"`
}

// Access modes of the signaling hub.
const (
	AccessOpen     = "open"
	AccessPassword = "password"
	AccessInvite   = "invite"
)

// Signal is the WebSocket hub.
type Signal struct {
	Access       string   `toml:"access"`
	Password     string   `toml:"password"`
	InviteSecret string   `toml:"invite_secret"`
	Origins      []string `toml:"origins"`
	APIKeys      []string `toml:"api_keys"`

	ResumeWindow time.Duration `toml:"resume_window"`
	PingInterval time.Duration `toml:"ping_interval"`
	History      int           `toml:"history"`

	MaxMessageBytes     int           `toml:"max_message_bytes"`
	MessagesPerSecond   float64       `toml:"messages_per_second"`
	MessageBurst        int           `toml:"message_burst"`
	MaxPeersPerRoom     int           `toml:"max_peers_per_room"`
	MaxRooms            int           `toml:"max_rooms"`
	MaxConnectionsPerIP int           `toml:"max_connections_per_ip"`
	SendQueue           int           `toml:"send_queue"`
	ShutdownTimeout     time.Duration `toml:"shutdown_timeout"`
}

// TLS is the certificate for HTTPS and TURN over TLS: from files, or from an
// ACME CA for ACMEDomains. Neither set turns TLS off.
type TLS struct {
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// ACMEDomains turns ACME on; exclusive with CertFile/KeyFile.
	ACMEDomains []string `toml:"acme_domains"`
	ACMEEmail   string   `toml:"acme_email"`
	// ACMECA is the CA's directory URL.
	ACMECA string `toml:"acme_ca"`
	// ACMECARoot is a PEM file of roots trusted for the CA's HTTPS (private
	// CAs, tests); empty trusts the system roots.
	ACMECARoot string `toml:"acme_ca_root"`
	// ACMEStorage holds the ACME account key and the certificates.
	ACMEStorage string `toml:"acme_storage"`
}

// LetsEncrypt is the production directory of Let's Encrypt.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Metrics is the Prometheus endpoint; an empty Listen turns it off.
type Metrics struct {
	Listen string `toml:"listen"`
}

// Log configures log/slog.
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// Cluster joins callbox nodes into one service through NATS (docs/cluster.md).
// An empty NATS list is one process, needing no NATS.
type Cluster struct {
	// NATS are the URLs of the NATS servers, as "nats://10.0.0.1:4222".
	NATS []string `toml:"nats"`
	// Node names this node in subjects and logs; empty is the host name.
	Node string `toml:"node"`
	// CredsFile is a NATS .creds file (user JWT and NKey seed).
	CredsFile string `toml:"creds_file"`
	User      string `toml:"user"`
	Password  string `toml:"password"`
	// TLSCA, TLSCert and TLSKey are PEM files for TLS to NATS: the CA to
	// trust, and a client certificate when the servers ask for one.
	TLSCA   string `toml:"tls_ca"`
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// TURNURIs are the other nodes' turn: URIs, handed out after this
	// node's own with the same credentials (one shared turn.secrets).
	TURNURIs []string `toml:"turn_uris"`
	// Replicas of the chat stream in a JetStream cluster.
	Replicas int `toml:"replicas"`
	// Heartbeat is how often a node says it is alive; three missed and
	// the others treat its peers as reconnecting.
	Heartbeat time.Duration `toml:"heartbeat"`
}

// Default is the configuration of a local two-tab demo: everything on
// loopback, a random TURN secret minted at start (see cmd/callbox).
func Default() Config {
	return Config{
		HTTP: HTTP{Listen: "127.0.0.1:8080"},
		TURN: TURN{
			Listen:                "127.0.0.1:3478",
			RelayPorts:            PortRange{Min: 49152, Max: 65535},
			Realm:                 "callbox",
			CredentialTTL:         12 * time.Hour,
			MaxAllocationLifetime: 24 * time.Hour,
			UserQuota:             10,
			TotalQuota:            10000,
			BusyNice:              -3,
		},
		Signal: Signal{
			Access:              AccessOpen,
			ResumeWindow:        30 * time.Second,
			PingInterval:        25 * time.Second,
			History:             100,
			MaxMessageBytes:     64 << 10,
			MessagesPerSecond:   20,
			MessageBurst:        60,
			MaxPeersPerRoom:     8,
			MaxRooms:            10000,
			MaxConnectionsPerIP: 50,
			SendQueue:           128,
			ShutdownTimeout:     5 * time.Second,
		},
		TLS: TLS{
			ACMECA:      LetsEncrypt,
			ACMEStorage: "/var/lib/callbox/acme",
		},
		Metrics: Metrics{Listen: "127.0.0.1:9478"},
		Log:     Log{Level: "info", Format: "text"},
		Cluster: Cluster{Replicas: 1, Heartbeat: time.Second},
	}
}

// Load reads a TOML file over the defaults and validates the result.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("config: %s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes TOML text over the defaults, strictly, and validates it.
// Errors carry the line of the offending key where it can be found.
func Parse(data []byte) (Config, error) {
	cfg := Default()
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return Config{}, fmt.Errorf("%s", perr.ErrorWithPosition())
		}
		return Config{}, err
	}
	if undecoded := md.Undecoded(); len(undecoded) > 0 {
		key := undecoded[0].String()
		return Config{}, &KeyError{Key: key, Line: lineOf(data, key), Msg: "unknown key"}
	}
	if err := cfg.Validate(); err != nil {
		var kerr *KeyError
		if errors.As(err, &kerr) && kerr.Line == 0 {
			kerr.Line = lineOf(data, kerr.Key)
		}
		return Config{}, err
	}
	return cfg, nil
}

// KeyError is a configuration error about one key.
type KeyError struct {
	Key  string // dotted, as "turn.relay_ports"
	Line int    // 1-based; 0 when the key is not in the file (a default)
	Msg  string
}

func (e *KeyError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Key, e.Msg)
}

func keyErr(key, format string, args ...any) *KeyError {
	return &KeyError{Key: key, Msg: fmt.Sprintf(format, args...)}
}
