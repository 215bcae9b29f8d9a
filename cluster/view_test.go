package cluster

import (
	"slices"
	"testing"
	"time"
)

// The view's rules, one event sequence per case: what the hub is told and
// who holds each peer afterwards.
func TestViewRules(t *testing.T) {
	joined := func(node, id string, gen uint64) wireEvent {
		return wireEvent{Node: node, Type: "joined", Room: "r", ID: id, Name: id + "-name", Tok: "t-" + id, Gen: gen}
	}
	tests := []struct {
		name   string
		events []wireEvent
		notes  []string          // "type id" told to the hub, in order
		owners map[string]string // id -> node afterwards ("" = gone)
	}{
		{
			name:   "join, rename, reconnect, resume, leave",
			events: []wireEvent{joined("a", "p1", 1), {Node: "a", Type: "renamed", Room: "r", ID: "p1", Name: "x"}, {Node: "a", Type: "reconnecting", Room: "r", ID: "p1"}, {Node: "a", Type: "resumed", Room: "r", ID: "p1", Name: "x", Gen: 1}, {Node: "a", Type: "left", Room: "r", ID: "p1", Reason: "left"}},
			notes:  []string{"joined p1", "renamed p1", "reconnecting p1", "resumed p1", "left p1"},
			owners: map[string]string{"p1": ""},
		},
		{
			name:   "only the owner's left counts",
			events: []wireEvent{joined("a", "p1", 1), {Node: "a", Type: evMoved, Room: "r", ID: "p1", To: "b", Gen: 2}, {Node: "a", Type: "left", Room: "r", ID: "p1"}},
			notes:  []string{"joined p1"},
			owners: map[string]string{"p1": "b"},
		},
		{
			name:   "a claim wins over the old owner's stale state",
			events: []wireEvent{joined("a", "p1", 1), {Node: "b", Type: "resumed", Room: "r", ID: "p1", Name: "p1-name", Gen: 2}, joined("a", "p1", 1)},
			notes:  []string{"joined p1"},
			owners: map[string]string{"p1": "b"},
		},
		{
			name:   "resumed of an unknown peer shows it joined",
			events: []wireEvent{{Node: "b", Type: "resumed", Room: "r", ID: "p2", Name: "n", Gen: 3}},
			notes:  []string{"joined p2"},
			owners: map[string]string{"p2": "b"},
		},
		{
			name:   "events about peers it does not hold are ignored",
			events: []wireEvent{joined("a", "p1", 1), {Node: "c", Type: "renamed", Room: "r", ID: "p1", Name: "evil"}, {Node: "c", Type: "reconnecting", Room: "r", ID: "p1"}},
			notes:  []string{"joined p1"},
			owners: map[string]string{"p1": "a"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := newView("self")
			var out notes
			for _, ev := range tt.events {
				v.apply(ev, &out)
			}
			var got []string
			for _, n := range out {
				got = append(got, n.Type+" "+n.ID)
			}
			if !slices.Equal(got, tt.notes) {
				t.Errorf("told the hub %q, want %q", got, tt.notes)
			}
			for id, node := range tt.owners {
				m := v.members[id]
				switch {
				case node == "" && m != nil:
					t.Errorf("%s still held by %s", id, m.node)
				case node != "" && (m == nil || m.node != node):
					t.Errorf("%s held by %v, want %s", id, m, node)
				}
			}
		})
	}
}

// A state reply replaces the node's peers; a dead node's peers reconnect,
// then leave when the window has passed.
func TestViewStateAndDeath(t *testing.T) {
	v := newView("self")
	var out notes
	v.apply(wireEvent{Node: "a", Type: "joined", Room: "r", ID: "p1", Name: "ada", Tok: "t1", Gen: 1}, &out)
	v.apply(wireEvent{Node: "a", Type: "joined", Room: "r", ID: "p2", Name: "bob", Tok: "t2", Gen: 1}, &out)
	out = out[:0]
	v.replace(wireState{Node: "a", Boot: "b", Ver: 9, Members: []wireMember{{Room: "r", ID: "p1", Name: "ada l.", Tok: "t1", Gen: 1}, {Room: "s", ID: "p3", Name: "cy", Tok: "t3", Gen: 1}}}, &out)
	if v.members["p2"] != nil || v.members["p1"].name != "ada l." || v.members["p3"] == nil {
		t.Fatalf("after the state: %+v", v.members)
	}
	if len(out) != 3 { // renamed p1, joined p3, left p2
		t.Fatalf("notes %+v", out)
	}
	out = out[:0]
	now := time.Now()
	v.died("a", now, time.Second, &out)
	if len(out) != 2 || !v.members["p1"].rec {
		t.Fatalf("after death: %+v", out)
	}
	out = out[:0]
	v.expire(now.Add(500*time.Millisecond), &out)
	if len(out) != 0 {
		t.Fatalf("expired inside the window: %+v", out)
	}
	v.expire(now.Add(time.Second), &out)
	if len(out) != 2 || len(v.members) != 0 || len(v.rooms) != 0 || len(v.byTok) != 0 {
		t.Fatalf("after the window: notes %+v, members %+v", out, v.members)
	}
}

// A peer of this node taken over by a claim it never answered: the hub is
// told to let its copy go.
func TestViewReleasesTakenOverPeer(t *testing.T) {
	v := newView("self")
	v.put(&member{room: "r", id: "p1", name: "ada", tok: "t1", node: "self", gen: 1})
	var out notes
	v.apply(wireEvent{Node: "b", Type: "resumed", Room: "r", ID: "p1", Name: "ada", Tok: "t1", Gen: 2}, &out)
	if len(out) != 1 || out[0].Type != noteRelease || out[0].ID != "p1" || v.members["p1"].node != "b" {
		t.Fatalf("notes %+v, owner %s", out, v.members["p1"].node)
	}
}
