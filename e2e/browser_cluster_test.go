package e2e

import "testing"

// Two people on two callbox nodes of one cluster: each browser talks to
// its own node only, they see each other's video and chat both ways.
func TestBrowserCallAcrossNodes(t *testing.T) {
	art := newArtifacts(t)
	nodes := startClusterNodes(t, art, 2, nil)
	room := randomRoom("cluster")
	servers := map[string]*callboxServer{
		"ada":   {App: nodes[0].App, art: art},
		"grace": {App: nodes[1].App, art: art},
	}
	bs := startBrowsers(t, art, func(name string) string { return callURL(servers[name], room, name, "") }, "ada", "grace")
	callAndChat(t, art, bs[0], bs[1], "hi n1", "hi n2")
	if a, g := nodes[0].Hub(), nodes[1].Hub(); a == g {
		t.Fatal("both browsers on one hub")
	}
}
