package turnserver

import (
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pion/turn/v4"
)

func TestMintCredentials(t *testing.T) {
	// The scheme is coturn's: a value computed independently with
	//   printf '1700000000:alice' | openssl dgst -sha1 -hmac 'test-secret-0123456789' -binary | base64
	u, p := MintCredentials(testSecret, "alice", time.Unix(1700000000, 0))
	if u != "1700000000:alice" {
		t.Errorf("username = %q", u)
	}
	if p != "FPY6T+4BrrRaS5sjkn3qVrYUwhw=" {
		t.Errorf("password = %q", p)
	}
	// pion's own REST helper agrees.
	pu, pp, err := turn.GenerateLongTermTURNRESTCredentials(testSecret, "bob", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	exp, user, err := ParseUsername(pu)
	if err != nil || user != "bob" {
		t.Fatalf("ParseUsername(%q) = %v, %q, %v", pu, exp, user, err)
	}
	if _, p := MintCredentials(testSecret, "bob", exp); p != pp {
		t.Errorf("password %q, pion computes %q", p, pp)
	}
}

func TestParseUsername(t *testing.T) {
	cases := []struct {
		in      string
		expires int64
		user    string
		ok      bool
	}{
		{"1700000000:alice", 1700000000, "alice", true},
		{"1700000000", 1700000000, "", true},
		{"1700000000:", 1700000000, "", true},
		{"1700000000:a:b:c", 1700000000, "a:b:c", true},
		{"0:x", 0, "x", true},
		{"1700000000:ünïcode", 1700000000, "ünïcode", true},
		{"", 0, "", false},
		{":alice", 0, "", false},
		{"alice", 0, "", false},
		{"alice:1700000000", 0, "", false},
		{"-1:alice", 0, "", false},
		{"+1:alice", 0, "", false},
		{" 1:alice", 0, "", false},
		{"1e9:alice", 0, "", false},
		{"0x10:alice", 0, "", false},
		{"1234567890123456789:alice", 0, "", false}, // 19 digits
		{"1700000000:\xff", 0, "", false},
		{"1:" + strings.Repeat("a", 600), 0, "", false},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			exp, user, err := ParseUsername(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("ParseUsername(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			}
			if tc.ok && (exp.Unix() != tc.expires || user != tc.user) {
				t.Errorf("ParseUsername(%q) = %d, %q; want %d, %q", tc.in, exp.Unix(), user, tc.expires, tc.user)
			}
		})
	}
}

func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{"1700000000:alice", "1700000000", ":x", "-1:x", "999999999999999999:u", "1:\xff", "12:a:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exp, user, err := ParseUsername(s)
		if err != nil {
			return
		}
		// What parses is exactly EXPIRY[:USER] with decimal EXPIRY, so the
		// quota key and the expiry callbox acts on are the client's.
		expiry, rest, hasUser := strings.Cut(s, ":")
		if hasUser && user != rest || !hasUser && user != "" {
			t.Fatalf("ParseUsername(%q) user = %q", s, user)
		}
		want := strings.TrimLeft(expiry, "0")
		if want == "" {
			want = "0"
		}
		if got := strconv.FormatInt(exp.Unix(), 10); got != want || exp.Unix() < 0 {
			t.Fatalf("ParseUsername(%q) expiry = %s, want %s", s, got, want)
		}
		if len(s) > maxUsernameBytes || !utf8.ValidString(s) {
			t.Fatalf("ParseUsername(%q) accepted an invalid USERNAME", s)
		}
	})
}
