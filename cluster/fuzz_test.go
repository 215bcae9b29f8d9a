package cluster

import (
	"encoding/json"
	"testing"
)

// The parsers of what comes from NATS: whatever the bytes, no panic, and
// what they accept holds the bounds the node relies on.

func FuzzParseEvent(f *testing.F) {
	for _, ev := range []wireEvent{
		{Node: "a", Boot: "b1", Ver: 1, Type: "joined", Room: "r", ID: "p1", Name: "ada", Tok: "t", Gen: 1},
		{Node: "a", Boot: "b1", Ver: 2, Type: evMoved, Room: "r", ID: "p1", To: "c", Gen: 2},
		{Node: "a", Boot: "b1", Ver: 3, Type: evTURN, User: "alice", N: 2},
		{Node: "a", Boot: "b1", Type: evAlive, Ver: 3},
	} {
		b, _ := json.Marshal(ev)
		f.Add(b)
	}
	f.Add([]byte(`{"node":"a.b","boot":"x","type":"left","room":"r","id":"p"}`))
	f.Add([]byte(`{"node":"a","boot":"x","type":"joined","room":"r r","id":"p"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := parseEvent(data)
		if err != nil {
			return
		}
		if !validName(ev.Node, 64) || ev.Boot == "" {
			t.Fatalf("accepted %+v", ev)
		}
		switch ev.Type {
		case evAlive, evBye, evTURN:
		default:
			if !validName(ev.ID, maxIDLen) || len(ev.Name) > maxNameLen {
				t.Fatalf("accepted %+v", ev)
			}
		}
		// Applying any accepted event to a view must not panic.
		v := newView("self")
		var out notes
		v.apply(ev, &out)
	})
}

func FuzzParseState(f *testing.F) {
	b, _ := json.Marshal(wireState{Node: "a", Boot: "b", Ver: 3, Members: []wireMember{{Room: "r", ID: "p1", Name: "ada", Tok: "t", Gen: 1}}, TURN: map[string]int{"alice": 1}})
	f.Add(b)
	f.Add([]byte(`{"node":"a","boot":"b","members":[{"room":"","id":"p"}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := parseState(data)
		if err != nil {
			return
		}
		v := newView("self")
		var out notes
		v.replace(st, &out)
	})
}

func FuzzParseClaim(f *testing.F) {
	b, _ := json.Marshal(wireClaim{Room: "r", ID: "p1", Tok: "t", By: "c", Gen: 2})
	f.Add(b, []byte(`{"ok":true,"pending":["eyJ0eXBlIjoic2lnbmFsIn0="]}`))
	f.Fuzz(func(t *testing.T, claim, reply []byte) {
		if c, err := parseClaim(claim); err == nil && (c.Tok == "" || !validName(c.By, 64)) {
			t.Fatalf("accepted %+v", c)
		}
		if r, err := parseClaimReply(reply); err == nil {
			for _, p := range r.Pending {
				if !validFrame(p) {
					t.Fatalf("accepted frame %q", p)
				}
			}
		}
	})
}

func FuzzParseChat(f *testing.F) {
	f.Add("callbox.chat.room", []byte(`{"from":"p1","name":"ada","time":1,"text":"hi"}`))
	f.Add("callbox.chat.a.b", []byte(`{"from":"p1","text":""}`))
	f.Fuzz(func(t *testing.T, subject string, data []byte) {
		room, c, err := parseChat(subject, data)
		if err != nil {
			return
		}
		if room == "" || c.Text == "" || len(c.Text) > maxTextLen {
			t.Fatalf("accepted %q %+v", room, c)
		}
	})
}

func FuzzValidFrame(f *testing.F) {
	f.Add([]byte(`{"type":"signal","from":"p1","payload":{}}`))
	f.Add([]byte(`{"type":"signal"`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if validFrame(b) && !json.Valid(b) {
			t.Fatalf("accepted %q", b)
		}
	})
}
