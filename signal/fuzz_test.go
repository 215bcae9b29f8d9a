package signal

import (
	"encoding/json"
	"testing"
)

// FuzzDecode: the decoder takes anything a client sends. It must not
// panic, must fail only with a non-fatal bad_message, and what it accepts
// must be a known type whose signal payload is valid JSON to relay as is.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"hello","version":1,"room":"team-standup","name":"Ada"}`,
		`{"type":"hello","version":1,"room":"team-standup","name":"Ada","resume":"r2X","lastSeq":41}`,
		`{"type":"signal","to":"p7Kq2","payload":{"description":{"type":"offer","sdp":"v=0"}}}`,
		`{"type":"signal","to":"p7Kq2","payload":null}`,
		`{"type":"chat","text":"can you hear me?"}`,
		`{"type":"rename","name":"Ada L."}`,
		`{"type":"leave"}`,
		`{"type":"hello","version":"1"}`,
		`{"type":5}`,
		`[]`, `null`, `"hello"`, `{`, "",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decode(data)
		if err != nil {
			pe, ok := err.(*ProtocolError)
			if !ok || pe.Code != CodeBadMessage || pe.Fatal || m != nil {
				t.Fatalf("decode(%q) = %v, %v: want a non-fatal bad_message", data, m, err)
			}
			return
		}
		switch m.Type {
		case "hello", "chat", "rename", "leave":
		case "signal":
			if m.To == "" || !json.Valid(m.Payload) {
				t.Fatalf("decode(%q) accepted a signal without a target or a valid payload", data)
			}
			// What the hub relays must encode.
			encode(signalOut{Type: "signal", From: "p1", Payload: m.Payload})
		default:
			t.Fatalf("decode(%q) accepted type %q", data, m.Type)
		}
	})
}
