package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

// The example file documents every key with its default: it must parse, and
// to exactly the defaults.
func TestExampleIsDefaults(t *testing.T) {
	data, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(data)
	if err != nil {
		t.Fatalf("config.example.toml: %v", err)
	}
	def := Default()
	// The example spells empty lists as [], the defaults leave them nil.
	normalize := func(c *Config) {
		c.TURN.Secrets, c.TURN.AllowedPeers, c.TURN.DeniedPeers = nil, nil, nil
		c.Signal.Origins, c.Signal.APIKeys = nil, nil
		c.TLS.ACMEDomains = nil
		c.Cluster.NATS, c.Cluster.TURNURIs = nil, nil
	}
	normalize(&cfg)
	normalize(&def)
	if !reflect.DeepEqual(cfg, def) {
		t.Errorf("example differs from defaults:\nexample %+v\ndefault %+v", cfg, def)
	}
	// And it names every key of the schema.
	keys := 0
	for _, line := range strings.Split(string(data), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(strings.TrimSpace(line), "#") && strings.TrimSpace(k) != "" {
			keys++
		}
	}
	want := 0
	for _, s := range []any{cfg.HTTP, cfg.TURN, cfg.Signal, cfg.TLS, cfg.Metrics, cfg.Log, cfg.Cluster} {
		want += reflect.TypeOf(s).NumField()
	}
	if keys != want {
		t.Errorf("example sets %d keys, schema has %d", keys, want)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, toml, want string
	}{
		{"unknown key", "[turn]\nlisten = \"127.0.0.1:3478\"\nbogus = 1\n", "line 3: turn.bogus: unknown key"},
		{"unknown table", "[nope]\nx = 1\n", "unknown key"},
		{"syntax", "[turn]\nrealm = \n", "line 2"},
		{"bad port range", "[turn]\nrelay_ports = \"5-1\"\n", "MIN is above MAX"},
		{"bad duration", "[turn]\ncredential_ttl = \"soon\"\n", "soon"},
		{"ttl bound", "\n[turn]\ncredential_ttl = \"1s\"\n", "line 3: turn.credential_ttl: 1s is out of range; must be between 1m and 720h"},
		{"short secret", "[turn]\nsecrets = [\"abc\"]\n", "line 2: turn.secrets: secret 1 is 3 characters; must be >= 16"},
		{"bad cidr", "[turn]\nallowed_peers = [\"10.0.0.0/33\"]\n", "10.0.0.0/33"},
		{"bad public ip", "[turn]\npublic_ip = \"example.com\"\n", "turn.public_ip"},
		{"negative quota", "[turn]\nuser_quota = -1\n", "line 2: turn.user_quota"},
		{"busy nice positive", "[turn]\nbusy_nice = 5\n", "line 2: turn.busy_nice: 5 is out of range; must be between -20 (highest priority) and 0 (off)"},
		{"busy nice too low", "[turn]\nbusy_nice = -21\n", "line 2: turn.busy_nice"},
		{"access", "[signal]\naccess = \"closed\"\n", "line 2: signal.access"},
		{"password too short", "[signal]\naccess = \"password\"\npassword = \"x\"\n", "line 3: signal.password"},
		{"invite secret missing", "[signal]\naccess = \"invite\"\n", "signal.invite_secret: must be at least 16"},
		{"peers per room", "[signal]\nmax_peers_per_room = 1\n", "between 2 and 1000"},
		{"ping too slow", "[signal]\nping_interval = \"90s\"\n", "signal.ping_interval"},
		{"log level", "[log]\nlevel = \"loud\"\n", "line 2: log.level"},
		{"http listen", "[http]\nlisten = \"nowhere\"\n", "line 2: http.listen"},
		{"wrong type", "[turn]\nuser_quota = \"ten\"\n", "user_quota"},
		{"tls key without cert", "[tls]\nkey_file = \"k.pem\"\n", "line 2: tls.key_file: is set but tls.cert_file is not"},
		{"tls cert without key", "[tls]\ncert_file = \"c.pem\"\n", "line 2: tls.cert_file: is set but tls.key_file is not"},
		{"tls files and acme", "[tls]\ncert_file = \"c\"\nkey_file = \"k\"\nacme_domains = [\"a.example\"]\n", "line 4: tls.acme_domains: cannot be used with tls.cert_file"},
		{"acme wildcard", "[tls]\nacme_domains = [\"*.example.com\"]\n", "tls.acme_domains: \"*.example.com\" is a wildcard"},
		{"acme ip", "[tls]\nacme_domains = [\"192.0.2.1\"]\n", "is an IP address"},
		{"acme port", "[tls]\nacme_domains = [\"a.example:443\"]\n", "has ':'"},
		{"acme twice", "[tls]\nacme_domains = [\"a.example\", \"A.example\"]\n", "listed twice"},
		{"acme email", "[tls]\nacme_domains = [\"a.example\"]\nacme_email = \"me\"\n", "line 3: tls.acme_email"},
		{"acme ca http", "[tls]\nacme_domains = [\"a.example\"]\nacme_ca = \"http://ca.example/dir\"\n", "line 3: tls.acme_ca: \"http://ca.example/dir\" must be an https://"},
		{"acme storage", "[tls]\nacme_domains = [\"a.example\"]\nacme_storage = \"\"\n", "line 3: tls.acme_storage"},
		{"https without tls", "[http]\nhttps_listen = \":443\"\n", "line 2: http.https_listen: needs a certificate"},
		{"https listen", "[http]\nhttps_listen = \"443\"\n", "line 2: http.https_listen"},
		{"redirect listen", "[http]\nredirect_listen = \"x:80\"\n", "line 2: http.redirect_listen"},
		{"turns without tls", "[turn]\ntls_listen = \":5349\"\n", "line 2: turn.tls_listen: needs a certificate"},
		{"cluster url", "[cluster]\nnats = [\"10.0.0.1:4222\"]\n", "line 2: cluster.nats"},
		{"cluster node", "[cluster]\nnode = \"a.b\"\n", "line 2: cluster.node"},
		{"cluster turn uri", "[cluster]\nturn_uris = [\"stun:x\"]\n", "line 2: cluster.turn_uris"},
		{"cluster heartbeat", "[cluster]\nheartbeat = \"1ms\"\n", "line 2: cluster.heartbeat"},
		{"turns on https without https", "[turn]\ntls_on_https = true\n[tls]\ncert_file = \"c\"\nkey_file = \"k\"\n", "line 2: turn.tls_on_https: needs http.https_listen"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.toml))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseOverridesDefaults(t *testing.T) {
	cfg, err := Parse([]byte(`
[turn]
relay_ports = "40000-40100"
allowed_peers = ["10.0.0.0/8", "fd00::/8"]
secrets = ["0123456789abcdef", "fedcba9876543210"]
`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TURN.RelayPorts != (PortRange{40000, 40100}) {
		t.Errorf("relay_ports = %v", cfg.TURN.RelayPorts)
	}
	if len(cfg.TURN.AllowedPeers) != 2 || cfg.TURN.AllowedPeers[1].String() != "fd00::/8" {
		t.Errorf("allowed_peers = %v", cfg.TURN.AllowedPeers)
	}
	if cfg.HTTP.Listen != Default().HTTP.Listen {
		t.Errorf("untouched default changed: %q", cfg.HTTP.Listen)
	}
}

func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile("../config.example.toml"); err == nil {
		f.Add(data)
	}
	f.Add([]byte("[turn]\nrelay_ports = \"1-2\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err == nil {
			if verr := cfg.Validate(); verr != nil {
				t.Fatalf("Parse accepted a config Validate rejects: %v", verr)
			}
		}
	})
}
