package app

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/callbox/callbox/internal/natstest"
)

// A node of a cluster hands out its own TURN URIs first, then the other
// nodes' (cluster.turn_uris) with the same credentials, and /healthz and
// the metrics say how the cluster is.
func TestClusterNodeICEAndHealth(t *testing.T) {
	nats := natstest.Start(t, 1)
	cfg := testConfig()
	cfg.Cluster.NATS = []string{nats[0].URL()}
	cfg.Cluster.Node = "app-test"
	cfg.Cluster.TURNURIs = []string{"turn:turn2.example.com:3478?transport=udp", "turns:turn3.example.com:443?transport=tcp"}
	a, _, _ := startApp(t, cfg)

	servers, _ := a.iceServers("alice")
	turn := servers[len(servers)-1]
	own := a.TURN().TURNURIs()
	want := append(slices.Clone(own), cfg.Cluster.TURNURIs...)
	if !slices.Equal(turn.URLs, want) || turn.Username == "" {
		t.Fatalf("TURN entry %+v, want URLs %v with credentials", turn, want)
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(a.HTTPURL() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		var h struct{ Status, Cluster string }
		json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if h.Status == "ok" && h.Cluster == "ok" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz %+v, want cluster ok", h)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, err := http.Get("http://" + a.metricsLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(body), "callbox_cluster_connected 1") {
		t.Error("metrics lack callbox_cluster_connected 1")
	}
}
