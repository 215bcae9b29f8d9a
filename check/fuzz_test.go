package check

import (
	"strings"
	"testing"
)

// The URL is typed by people (or pasted from a chat): never panic, and
// what parses must come out in a form that parses back the same.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{
		"https://call.example.com",
		"http://127.0.0.1:8080",
		"call.example.com",
		"https://call.example.com/r/standup?invite=1764122400.abc",
		"https://[::1]:8443/",
		"http://[fe80::1%25eth0]:80",
		"ftp://x",
		"https://:443",
		"https://user:pw@host",
		"https://host:99999",
		" https://a.example/r/ ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		tg, err := ParseTarget(raw)
		if err != nil {
			return
		}
		if tg.Scheme != "http" && tg.Scheme != "https" || tg.Host == "" {
			t.Fatalf("ParseTarget(%q) = %+v", raw, tg)
		}
		if _, err := parsePort(tg.Port); err != nil {
			t.Fatalf("ParseTarget(%q): port %q: %v", raw, tg.Port, err)
		}
		again, err := ParseTarget(tg.Base())
		if err != nil {
			t.Fatalf("Base() %q of %q does not parse: %v", tg.Base(), raw, err)
		}
		if again.Scheme != tg.Scheme || again.Host != tg.Host || again.Port != tg.Port {
			t.Fatalf("Base() %q of %q parses to %+v, want %+v", tg.Base(), raw, again, tg)
		}
	})
}

// What the hub sends is outside input: a hostile or broken server must not
// crash the check, and the ICE servers it names must parse or be listed bad.
func FuzzDecodeServerMsg(f *testing.F) {
	for _, s := range []string{
		`{"type":"welcome","id":"p3fZ9","room":"r","iceServers":[{"urls":["stun:turn.example.com:3478"]},{"urls":["turn:turn.example.com:3478?transport=udp","turns:turn.example.com:443?transport=tcp"],"username":"1764122400:p3fZ9","credential":"0k2="}],"iceExpires":1764122400000}`,
		`{"type":"welcome","iceServers":[{"urls":"stun:[::1]:3478"}]}`,
		`{"type":"error","code":"unauthorized","reason":"wrong or missing password","fatal":true}`,
		`{"type":"welcome","iceServers":[{"urls":[1,2]}]}`,
		`{"type":"welcome","iceServers":[{"urls":["turn:"]},{"urls":["stun:a:99999"]}],"iceExpires":-1}`,
		`{}`,
		`[]`,
		`not json`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeServerMsg(b)
		if err != nil {
			return
		}
		if m.Type == "" {
			t.Fatal("decoded a message without a type")
		}
		set, bad := parseICE(m.ICEServers, m.ICEExpires)
		n := 0
		for _, s := range m.ICEServers {
			n += len(s.URLs)
		}
		if len(set.uris)+len(bad) != n {
			t.Fatalf("%d URLs in, %d parsed + %d bad out", n, len(set.uris), len(bad))
		}
		for _, u := range set.uris {
			if u.uri == nil || strings.TrimSpace(u.raw) == "" && u.uri.Host == "" {
				t.Fatalf("parsed URI %q has no host", u.raw)
			}
		}
	})
}

// /api/info is outside input too.
func FuzzDecodeInfo(f *testing.F) {
	f.Add([]byte(`{"tls":true,"turn":{"relayAddress":"203.0.113.7","publicIpSet":true,"uris":["turn:a:3478?transport=udp"],"stun":["stun:a:3478"],"relaysIpv6":false}}`))
	f.Add([]byte(`{"turn":{"relayAddress":"10.0.0.5","addressProblem":"relay address 10.0.0.5 is private"}}`))
	f.Add([]byte(`{"turn":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if v, err := decodeInfo(b); err == nil && v == nil {
			t.Fatal("nil info without an error")
		}
	})
}
