package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestCallboxMessages(t *testing.T) {
	p := callboxProto{}
	if got := p.URL("http://127.0.0.1:8080", 3); got != "ws://127.0.0.1:8080/ws" {
		t.Errorf("URL = %q", got)
	}
	var hello map[string]any
	if err := json.Unmarshal(p.Hello(7, 3), &hello); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "hello", "version": float64(1), "room": "bench-3", "name": "b7"}
	for k, v := range want {
		if hello[k] != v {
			t.Errorf("hello[%q] = %v, want %v", k, hello[k], v)
		}
	}
	frame, err := p.Signal("p7Kq2", 1234567*time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	var sig struct {
		Type    string `json:"type"`
		To      string `json:"to"`
		Payload struct {
			T         int64 `json:"t"`
			Candidate struct {
				Candidate string `json:"candidate"`
				SDPMid    string `json:"sdpMid"`
			} `json:"candidate"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(frame, &sig); err != nil {
		t.Fatal(err)
	}
	if sig.Type != "signal" || sig.To != "p7Kq2" || sig.Payload.T != 1234567 ||
		!strings.HasPrefix(sig.Payload.Candidate.Candidate, "candidate:") || sig.Payload.Candidate.SDPMid != "0" {
		t.Errorf("signal frame %s", frame)
	}
	if p.Heartbeat() != nil {
		t.Error("callbox keeps sockets alive with server pings: no client heartbeat")
	}
}

func TestPeerJSMessages(t *testing.T) {
	p := peerjsProto{}
	u, err := url.Parse(p.URL("http://127.0.0.1:9000", 42))
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if u.Scheme != "ws" || u.Host != "127.0.0.1:9000" || u.Path != "/peerjs" ||
		q.Get("key") != "peerjs" || q.Get("id") != "b42" || q.Get("id") != p.PresetID(42) || q.Get("token") == "" {
		t.Errorf("URL = %s", u)
	}
	if p.Hello(1, 0) != nil {
		t.Error("PeerJS joins by URL: no hello frame")
	}
	frame, err := p.Signal("b43", 99*time.Microsecond)
	if err != nil {
		t.Fatal(err)
	}
	var sig struct {
		Type    string `json:"type"`
		Dst     string `json:"dst"`
		Payload struct {
			T int64 `json:"t"`
		} `json:"payload"`
	}
	if err := json.Unmarshal(frame, &sig); err != nil {
		t.Fatal(err)
	}
	if sig.Type != "CANDIDATE" || sig.Dst != "b43" || sig.Payload.T != 99000 {
		t.Errorf("signal frame %s", frame)
	}
	if string(p.Heartbeat()) != `{"type":"HEARTBEAT"}` || p.HeartbeatEvery() != 5*time.Second {
		t.Errorf("heartbeat %s every %s", p.Heartbeat(), p.HeartbeatEvery())
	}
}

func TestParse(t *testing.T) {
	tests := []struct {
		name    string
		proto   protocol
		frame   string
		want    inbound
		wantErr bool
	}{
		{"callbox welcome", callboxProto{}, `{"type":"welcome","id":"p3fZ9","room":"r","peers":[{"id":"x","name":"y"}],"iceServers":[{"urls":["stun:h:3478"]}]}`, inbound{kind: kindJoined, id: "p3fZ9"}, false},
		{"callbox welcome without id", callboxProto{}, `{"type":"welcome"}`, inbound{}, true},
		{"callbox signal", callboxProto{}, `{"type":"signal","from":"a","payload":{"t":5000,"candidate":{}}}`, inbound{kind: kindSignal, stamp: 5000}, false},
		{"callbox signal without stamp", callboxProto{}, `{"type":"signal","from":"a","payload":{"sdp":"x"}}`, inbound{kind: kindSignal}, true},
		{"callbox signal with string payload", callboxProto{}, `{"type":"signal","from":"a","payload":"x"}`, inbound{kind: kindSignal}, true},
		{"callbox error", callboxProto{}, `{"type":"error","code":"room_full","reason":"full","fatal":true}`, inbound{kind: kindError, detail: "room_full: full"}, false},
		{"callbox reconnect", callboxProto{}, `{"type":"reconnect","reason":"server shutting down","after":1000}`, inbound{kind: kindError, detail: "reconnect: server shutting down"}, false},
		{"callbox presence", callboxProto{}, `{"type":"joined","peer":{"id":"a","name":"b"}}`, inbound{kind: kindOther}, false},
		{"callbox no type", callboxProto{}, `{}`, inbound{}, true},
		{"callbox not JSON", callboxProto{}, `hello`, inbound{}, true},
		{"peerjs open", peerjsProto{}, `{"type":"OPEN"}`, inbound{kind: kindJoined}, false},
		{"peerjs candidate", peerjsProto{}, `{"type":"CANDIDATE","src":"b1","dst":"b0","payload":{"t":7}}`, inbound{kind: kindSignal, stamp: 7}, false},
		{"peerjs offer", peerjsProto{}, `{"type":"OFFER","src":"b1","dst":"b0","payload":{"t":8}}`, inbound{kind: kindSignal, stamp: 8}, false},
		{"peerjs error", peerjsProto{}, `{"type":"ERROR","payload":{"msg":"Server has reached its concurrent user limit"}}`, inbound{kind: kindError, detail: "ERROR: Server has reached its concurrent user limit"}, false},
		{"peerjs id taken", peerjsProto{}, `{"type":"ID-TAKEN","payload":{"msg":"ID is taken"}}`, inbound{kind: kindError, detail: "ID-TAKEN: ID is taken"}, false},
		{"peerjs expire", peerjsProto{}, `{"type":"EXPIRE","src":"b1","dst":"b0"}`, inbound{kind: kindError, detail: "EXPIRE: "}, false},
		{"peerjs unknown", peerjsProto{}, `{"type":"PING"}`, inbound{kind: kindOther}, false},
		{"peerjs negative stamp", peerjsProto{}, `{"type":"ANSWER","payload":{"t":-1}}`, inbound{kind: kindSignal}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.proto.Parse([]byte(tt.frame))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err %v, want error %v", err, tt.wantErr)
			}
			if !tt.wantErr && got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// What a client sends comes back, after the server's relay, with the same
// stamp: the latency maths rests on it.
func TestSignalRoundTrip(t *testing.T) {
	for _, p := range []protocol{callboxProto{}, peerjsProto{}} {
		t.Run(p.Name(), func(t *testing.T) {
			sent, err := p.Signal("peer", 123456789)
			if err != nil {
				t.Fatal(err)
			}
			// Both servers forward the payload as is and rename the
			// addressing field; model that relay.
			var m map[string]any
			if err := json.Unmarshal(sent, &m); err != nil {
				t.Fatal(err)
			}
			delete(m, "to")
			m["from"], m["src"] = "sender", "sender"
			relayed, _ := json.Marshal(m)
			in, err := p.Parse(relayed)
			if err != nil || in.kind != kindSignal || in.stamp != 123456789 {
				t.Errorf("Parse(%s) = %+v, %v", relayed, in, err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"type":"welcome","id":"p1"}`,
		`{"type":"signal","payload":{"t":1}}`,
		`{"type":"error","code":"x"}`,
		`{"type":"CANDIDATE","payload":{"t":1}}`,
		`{"type":"ERROR","payload":"x"}`,
		`{"type":"OPEN"}`,
		`[]`,
		`{"type":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		for _, p := range []protocol{callboxProto{}, peerjsProto{}} {
			in, err := p.Parse(frame)
			if err == nil && in.kind == kindSignal && in.stamp < 0 {
				t.Fatalf("%s: negative stamp from %q", p.Name(), frame)
			}
		}
	})
}

// TestSignalFrames: the appended frames are the bytes json.Marshal makes,
// and fastStamp reads what the full parse reads.
func TestSignalFrames(t *testing.T) {
	for _, tc := range []struct {
		proto    protocol
		typ, key string
		relayed  string // as the server relays it, %d the stamp
	}{
		{callboxProto{}, "signal", "to", `{"type":"signal","from":"pAbC","payload":{"t":%d,"candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}}`},
		{peerjsProto{}, "CANDIDATE", "dst", `{"type":"CANDIDATE","src":"b1","dst":"b0","payload":{"t":%d,"candidate":{"candidate":"c","sdpMid":"0","sdpMLineIndex":0}}}`},
	} {
		t.Run(tc.proto.Name(), func(t *testing.T) {
			for _, stamp := range []time.Duration{0, 1, 1234567, 999999999999999999} {
				got, err := tc.proto.Signal("b0-x_Y", stamp)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := json.Marshal(map[string]any{"type": tc.typ, tc.key: "b0-x_Y", "payload": newPayload(stamp)})
				var g, w any
				json.Unmarshal(got, &g)
				json.Unmarshal(want, &w)
				if !json.Valid(got) || fmt.Sprint(g) != fmt.Sprint(w) {
					t.Fatalf("Signal = %s\nwant %s", got, want)
				}
				frame := []byte(fmt.Sprintf(tc.relayed, stamp))
				if st, ok := fastStamp(frame, `{"type":"`+tc.typ+`",`); !ok || st != stamp {
					t.Fatalf("fastStamp(%s) = %v, %v", frame, st, ok)
				}
				if in, err := tc.proto.Parse(frame); err != nil || in.kind != kindSignal || in.stamp != stamp {
					t.Fatalf("Parse(%s) = %+v, %v", frame, in, err)
				}
				if st, err := stampOf(json.RawMessage(frame[bytes.Index(frame, []byte(`{"t"`)) : len(frame)-1])); err != nil || st != stamp {
					t.Fatalf("the full parse reads %v, %v", st, err)
				}
			}
			if _, err := tc.proto.Signal(`a"b`, 1); err == nil {
				t.Fatal("an id needing escapes was not refused")
			}
		})
	}
	for _, frame := range []string{`{"type":"signal","payload":{"t":-1}}`, `{"type":"signal","payload":{"t":}`, `{"type":"signal","payload":{"t":1x}`, `{"type":"welcome"}`} {
		if _, ok := fastStamp([]byte(frame), `{"type":"signal",`); ok {
			t.Errorf("fastStamp took %s", frame)
		}
	}
}

func TestWelcomeFastPath(t *testing.T) {
	for _, tc := range []struct {
		frame, id string
	}{
		{`{"type":"welcome","id":"pAbC-_9","room":"r","iceServers":[]}`, "pAbC-_9"},
		{`{"type":"welcome","room":"r","id":"pX"}`, "pX"},     // other order: the full parse
		{`{"type":"welcome","id":"p\"q","room":"r"}`, "p\"q"}, // an escape: the full parse
	} {
		in, err := callboxProto{}.Parse([]byte(tc.frame))
		if err != nil || in.kind != kindJoined || in.id != tc.id {
			t.Errorf("Parse(%s) = %+v, %v; want joined %q", tc.frame, in, err, tc.id)
		}
	}
}
