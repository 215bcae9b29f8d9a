package signal

import (
	"testing"

	"github.com/gorilla/websocket"

	"github.com/callbox/callbox/config"
)

// TestSetConfig: a reload switches the access mode for the next join and
// leaves the peer already in the room connected.
func TestSetConfig(t *testing.T) {
	ts := newTestServer(t, nil)
	inside, _ := ts.join(t, "r", "A")

	cfg := testConfig(func(c *config.Signal) { c.Access = config.AccessPassword; c.Password = "correct horse" })
	if err := ts.hub.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	t.Run("new join needs the password", func(t *testing.T) {
		c := ts.dialWS(t)
		c.send(hello("r", "B"))
		c.expectError(CodeUnauthorized, true)
		c.expectClose(websocket.ClosePolicyViolation)
	})
	t.Run("new join with the password", func(t *testing.T) {
		c := ts.dialWS(t)
		m := hello("r", "C")
		m["password"] = "correct horse"
		c.send(m)
		c.expect("welcome")
		inside.expect("joined")
	})
	t.Run("broken config refused", func(t *testing.T) {
		bad := cfg
		bad.Password = "short"
		if err := ts.hub.SetConfig(bad); err == nil {
			t.Fatal("SetConfig accepted a 5-character password")
		}
		if got := ts.hub.conf().Password; got != "correct horse" {
			t.Fatalf("password after refused SetConfig = %q", got)
		}
	})
}
