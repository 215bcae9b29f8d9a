package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testSecret = "0123456789abcdef0123456789abcdef"

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "callbox.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run([]string{"version"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "callbox ") {
		t.Errorf("version printed %q", out.String())
	}
}

// The credentials are checked against the REST scheme computed here
// independently: what coturn and the apps that use it expect.
func TestCredentials(t *testing.T) {
	path := writeConfig(t, `
[turn]
listen = "127.0.0.1:3478"
host = "turn.example.com"
secrets = ["`+testSecret+`", "fedcba9876543210fedcba9876543210"]
`)
	var out, errOut bytes.Buffer
	before := time.Now()
	if err := run([]string{"credentials", "-config", path, "-user", "alice", "-ttl", "2h"}, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	var got struct {
		Username string   `json:"username"`
		Password string   `json:"password"`
		TTL      int64    `json:"ttl"`
		URIs     []string `json:"uris"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	expiry, user, ok := strings.Cut(got.Username, ":")
	if !ok || user != "alice" {
		t.Fatalf("username %q, want EXPIRY:alice", got.Username)
	}
	exp, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil {
		t.Fatalf("expiry %q: %v", expiry, err)
	}
	if d := time.Unix(exp, 0).Sub(before); d < 2*time.Hour-2*time.Second || d > 2*time.Hour+2*time.Second {
		t.Errorf("expiry is %s from now, want 2h", d)
	}
	mac := hmac.New(sha1.New, []byte(testSecret))
	mac.Write([]byte(got.Username))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); got.Password != want {
		t.Errorf("password %q, want %q (signed with the first secret)", got.Password, want)
	}
	if got.TTL != 7200 {
		t.Errorf("ttl %d, want 7200", got.TTL)
	}
	want := []string{"turn:turn.example.com:3478?transport=udp", "turn:turn.example.com:3478?transport=tcp"}
	if strings.Join(got.URIs, " ") != strings.Join(want, " ") {
		t.Errorf("uris %v, want %v", got.URIs, want)
	}
}

func TestInvite(t *testing.T) {
	path := writeConfig(t, `
[signal]
access = "invite"
invite_secret = "`+testSecret+`"
`)
	var out, errOut bytes.Buffer
	if err := run([]string{"invite", "-config", path, "-room", "standup", "-url", "https://call.example.com/"}, &out, &errOut); err != nil {
		t.Fatalf("%v: %s", err, errOut.String())
	}
	if !strings.HasPrefix(out.String(), "https://call.example.com/r/standup?invite=") {
		t.Errorf("invite printed %q", out.String())
	}
}

func TestCommandErrors(t *testing.T) {
	good := writeConfig(t, "[turn]\nsecrets = [\""+testSecret+"\"]\n")
	noSecret := writeConfig(t, "")
	badKey := writeConfig(t, "[turn]\nrealm = \"x\"\nrelay_portz = \"1-2\"\n")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"unknown command", []string{"frobnicate"}, "unknown command"},
		{"credentials without config", []string{"credentials", "-user", "a"}, "-config is required"},
		{"credentials without user", []string{"credentials", "-config", good}, "-user"},
		{"credentials user with colon", []string{"credentials", "-config", good, "-user", "a:b"}, "-user"},
		{"credentials without secret", []string{"credentials", "-config", noSecret, "-user", "a"}, "no turn.secrets"},
		{"config unknown key", []string{"credentials", "-config", badKey, "-user", "a"}, "line 3: turn.relay_portz: unknown key"},
		{"config missing", []string{"-config", filepath.Join(t.TempDir(), "nope.toml")}, "no such file"},
		{"invite bad room", []string{"invite", "-config", good, "-room", "a b"}, "-room"},
		{"invite without secret", []string{"invite", "-config", good, "-room", "ab"}, "no signal.invite_secret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(tt.args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestSDNotify(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", path)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	if err != nil || string(buf[:n]) != "READY=1" {
		t.Errorf("read %q, %v; want READY=1", buf[:n], err)
	}
}
