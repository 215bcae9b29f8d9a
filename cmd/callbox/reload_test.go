package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/callbox/callbox/internal/testutil"
)

// notifySocket listens where sdNotify writes and returns the states read.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	states := make(chan string, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 256)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			states <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return states
}

func expectState(t *testing.T, states <-chan string, prefix string) {
	t.Helper()
	select {
	case s := <-states:
		if !strings.HasPrefix(s, prefix) {
			t.Fatalf("sd_notify %q, want %s", s, prefix)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no sd_notify %s", prefix)
	}
}

// waitLog waits for substr in the log after its first from bytes.
func waitLog(t *testing.T, logs *testutil.SyncBuffer, from int, substr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String()[from:], substr) {
		if time.Now().After(deadline) {
			t.Fatalf("log lacks %q:\n%s", substr, logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const reloadBase = `
[http]
listen = "127.0.0.1:0"
[turn]
listen = "127.0.0.1:0"
secrets = ["0123456789abcdef-old"]
[metrics]
listen = ""
`

// SIGHUP reloads: systemd hears RELOADING=1 then READY=1; a good file is
// applied, a broken one is logged with its line and key while the old
// configuration keeps serving, and a moved listener is reported as needing
// a restart.
func TestSIGHUPReload(t *testing.T) {
	states := notifySocket(t)
	path := writeConfig(t, reloadBase)
	logs := &testutil.SyncBuffer{}
	hup := make(chan os.Signal, 1)
	stop := testutil.Run(t, "serve", 15*time.Second, func(ctx context.Context) error {
		return serveUntil(ctx, []string{"-config", path}, logs, hup)
	})
	defer stop()
	expectState(t, states, "READY=1")
	waitLog(t, logs, 0, "callbox running")
	web := regexp.MustCompile(`web=(http://\S+)`).FindStringSubmatch(logs.String())
	if web == nil {
		t.Fatalf("no web address in the log:\n%s", logs)
	}
	healthy := func() bool {
		resp, err := http.Get(web[1] + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}

	for _, tc := range []struct {
		name, file, wantLog string
	}{
		{"rotated secret", strings.Replace(reloadBase, `secrets = [`, `secrets = ["0123456789abcdef-new", `, 1), "turn_secrets=2"},
		{"broken file", reloadBase + "[signal]\naccess = \"closed\"\n", `line 10: signal.access: \"closed\" is not one of`},
		{"syntax error", reloadBase + "[signal\n", "config file is broken; still running the previous configuration"},
		{"moved listener", strings.Replace(reloadBase, `listen = "127.0.0.1:0"`, `listen = "127.0.0.1:1"`, 1), "need a restart"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			from := len(logs.String())
			hup <- syscall.SIGHUP
			expectState(t, states, "RELOADING=1\nMONOTONIC_USEC=")
			expectState(t, states, "READY=1")
			waitLog(t, logs, from, tc.wantLog)
			if !healthy() {
				t.Fatal("not serving after the reload")
			}
		})
	}
}
