package app

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/pion/turn/v4"

	"github.com/callbox/callbox/config"
)

const (
	secretOld = "old-secret-0123456789"
	secretNew = "new-secret-9876543210"
)

// tryAllocateUDP allocates a relay over UDP and reports the error.
func tryAllocateUDP(t *testing.T, a *App, user, pass string) error {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: a.TURN().UDPAddr().String(),
		TURNServerAddr: a.TURN().UDPAddr().String(),
		Conn:           conn,
		Username:       user,
		Password:       pass,
		Realm:          config.Default().TURN.Realm,
		RTO:            200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err == nil {
		relay.Close()
	}
	return err
}

func signedWith(secret, username, password string) bool {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil)) == password
}

// A secret rotation by reload: credentials of the old secret keep working
// while it is listed second, the new first secret signs, and dropping the
// old one ends its credentials. Keys that need a restart are named.
func TestReloadRotatesSecrets(t *testing.T) {
	cfg := testConfig()
	cfg.TURN.Secrets = []string{secretOld}
	a, _, _ := startApp(t, cfg)
	old := a.TURN().Credentials("alice", time.Hour)

	next := cfg
	next.TURN.Secrets = []string{secretNew, secretOld}
	next.HTTP.Listen = "127.0.0.1:1" // cannot move a bound listener
	next.Signal.Access = config.AccessPassword
	next.Signal.Password = "correct horse"
	restart, err := a.Reload(next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(restart, []string{"http.listen"}) {
		t.Errorf("needs restart %v, want [http.listen]", restart)
	}
	if got := a.Config(); got.HTTP.Listen != cfg.HTTP.Listen || got.Signal.Access != config.AccessPassword {
		t.Errorf("config in force: http.listen %q (want the old one), signal.access %q (want the new one)", got.HTTP.Listen, got.Signal.Access)
	}
	fresh := a.TURN().Credentials("bob", time.Hour)
	for _, tc := range []struct {
		name       string
		user, pass string
	}{
		{"old credential, rotated", old.Username, old.Password},
		{"new credential", fresh.Username, fresh.Password},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tryAllocateUDP(t, a, tc.user, tc.pass); err != nil {
				t.Fatalf("allocate: %v", err)
			}
		})
	}
	if !signedWith(secretNew, fresh.Username, fresh.Password) {
		t.Error("new credentials are not signed with the new first secret")
	}

	next.TURN.Secrets = []string{secretNew}
	if _, err := a.Reload(next); err != nil {
		t.Fatal(err)
	}
	t.Run("old secret removed", func(t *testing.T) {
		if err := tryAllocateUDP(t, a, old.Username, old.Password); err == nil {
			t.Fatal("a credential of a removed secret still allocates")
		}
	})
}

// With no secret in the file, the generated one survives reloads, so the
// credentials already handed out stay valid.
func TestReloadKeepsGeneratedSecret(t *testing.T) {
	cfg := testConfig()
	a, _, _ := startApp(t, cfg)
	c := a.TURN().Credentials("alice", time.Hour)
	if _, err := a.Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if err := tryAllocateUDP(t, a, c.Username, c.Password); err != nil {
		t.Fatalf("allocate after reload: %v", err)
	}
}
