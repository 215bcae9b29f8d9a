package main

import (
	"testing"

	"github.com/callbox/callbox/config"
)

// The bench's callbox config must stay valid as the schema changes, and
// must lift the limits a load of n clients would hit.
func TestCallboxConfig(t *testing.T) {
	for _, tt := range []struct {
		n, room int
		rate    float64
	}{{2, 2, 5000}, {1000, 2, 5000}, {10000, 4, 5000}, {19000, 8, 100000}} {
		t.Run("", func(t *testing.T) {
			cfg, err := config.Parse([]byte(callboxConfig(8080, 3478, tt.n, tt.room, tt.rate)))
			if err != nil {
				t.Fatal(err)
			}
			s := cfg.Signal
			if s.MaxConnectionsPerIP < tt.n || s.MaxRooms < tt.n/tt.room || s.MaxPeersPerRoom < tt.room {
				t.Errorf("limits too low for %d clients in rooms of %d: %+v", tt.n, tt.room, s)
			}
			// A client sends rate/n messages per second: room to spare.
			if perClient := tt.rate / float64(tt.n); s.MessagesPerSecond < 2*perClient {
				t.Errorf("rate limit %g/s for clients sending %g/s", s.MessagesPerSecond, perClient)
			}
			if cfg.Metrics.Listen != "" || cfg.Log.Level != "warn" || cfg.HTTP.Listen != "127.0.0.1:8080" {
				t.Errorf("metrics %q, log %q, http %q", cfg.Metrics.Listen, cfg.Log.Level, cfg.HTTP.Listen)
			}
		})
	}
}
