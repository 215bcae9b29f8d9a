package signal

import (
	"context"
	"testing"
	"time"

	"github.com/callbox/callbox/config"
)

// A hub restarted with the same resume key takes back the sessions of the
// process before it: same ids, the others told the resumer is back.
func TestResumeAfterRestart(t *testing.T) {
	key := []byte("the same key in both processes")
	first := startTestServerKey(t, nil, false, key)
	a, wa := first.join(t, "call", "A")
	b, wb := first.join(t, "call", "B")
	a.expect("joined")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := first.hub.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	a.ws.Close()
	b.ws.Close()

	second := startTestServerKey(t, nil, false, key)
	a2 := second.dialWS(t)
	a2.send(map[string]any{"type": "hello", "version": 1, "room": "call", "name": "A", "resume": wa.Resume})
	w := a2.expect("welcome")
	if !w.Resumed || w.ID != wa.ID || w.Name != "A" || len(w.Peers) != 0 {
		t.Fatalf("A's welcome after the restart: %v", w)
	}
	b2 := second.dialWS(t)
	b2.send(map[string]any{"type": "hello", "version": 1, "room": "call", "name": "B", "resume": wb.Resume})
	w = b2.expect("welcome")
	if !w.Resumed || w.ID != wb.ID || len(w.Peers) != 1 || w.Peers[0].ID != wa.ID {
		t.Fatalf("B's welcome after the restart: %v", w)
	}
	if m := a2.expect("resumed"); m.ID != wb.ID {
		t.Fatalf("A was told %v, want B resumed", m)
	}
	// Signals flow between the resumed ids.
	a2.send(map[string]any{"type": "signal", "to": wb.ID, "payload": map[string]any{"x": 1}})
	if m := b2.expect("signal"); m.From != wa.ID {
		t.Fatalf("B got %v", m)
	}
}

func TestResumeAfterRestartRefused(t *testing.T) {
	key := []byte("key one")
	first := startTestServerKey(t, nil, false, key)
	_, w := first.join(t, "call", "A")
	tests := []struct {
		name   string
		key    []byte
		room   string
		token  string
		mutate func(*config.Signal)
	}{
		{"another key", []byte("key two"), "call", w.Resume, nil},
		{"another room", key, "other", w.Resume, nil},
		{"forged mac", key, "call", w.Resume[:len(w.Resume)-2] + "AA", nil},
		{"random token", key, "call", "r" + randomID(resumeTokenSz), nil},
		{"resume off", key, "call", w.Resume, func(c *config.Signal) { c.ResumeWindow = 0 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ts := startTestServerKey(t, tc.mutate, false, tc.key)
			c := ts.dialWS(t)
			c.send(map[string]any{"type": "hello", "version": 1, "room": tc.room, "name": "A", "resume": tc.token})
			c.expectError(CodeResumeFailed, true)
		})
	}
}
