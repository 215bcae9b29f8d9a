package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

func probePacket(channel uint16, sent time.Duration, seq, trial uint32, size int) []byte {
	b := make([]byte, 4+size)
	binary.BigEndian.PutUint16(b[0:2], channel)
	binary.BigEndian.PutUint16(b[2:4], uint16(size))
	binary.BigEndian.PutUint64(b[4:12], uint64(sent))
	binary.BigEndian.PutUint32(b[12:16], seq)
	binary.BigEndian.PutUint32(b[16:20], trial)
	return b
}

func TestParseChannelData(t *testing.T) {
	good := probePacket(channelNumber, 5*time.Millisecond, 9, 3, 200)
	tests := []struct {
		name   string
		in     []byte
		wantOK bool
		wantN  int
	}{
		{name: "probe", in: good, wantOK: true, wantN: 200},
		{name: "udp padding after data", in: append(bytes.Clone(good), 0, 0, 0), wantOK: true, wantN: 200},
		{name: "length beyond packet", in: good[:100], wantOK: false},
		{name: "stun message", in: []byte{0x01, 0x01, 0, 0}, wantOK: false},
		{name: "short", in: []byte{0x40, 0}, wantOK: false},
		{name: "empty data", in: []byte{0x40, 0x00, 0, 0}, wantOK: true, wantN: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ch, data, ok := parseChannelData(tc.in)
			if ok != tc.wantOK || (ok && len(data) != tc.wantN) {
				t.Fatalf("ok %v, %d bytes; want ok %v, %d bytes", ok, len(data), tc.wantOK, tc.wantN)
			}
			if ok && tc.wantN > 0 && ch != channelNumber {
				t.Fatalf("channel %#x", ch)
			}
		})
	}
	_, data, _ := parseChannelData(good)
	sent, seq, trial, ok := parseProbe(data)
	if !ok || sent != 5*time.Millisecond || seq != 9 || trial != 3 {
		t.Fatalf("probe: %v %d %d %v", sent, seq, trial, ok)
	}
	if _, _, _, ok := parseProbe(data[:probeHeader-1]); ok {
		t.Fatal("a probe shorter than its header parsed")
	}
}

func TestDecodeResponse(t *testing.T) {
	tid := stun.NewTransactionID()
	relay := stun.XORMappedAddress{IP: netip.MustParseAddr("127.0.0.1").AsSlice(), Port: 40001}
	ok, err := stun.Build(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse),
		attrAs{relay, stun.AttrXORRelayedAddress}, stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := stun.Build(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	noRelay, _ := stun.Build(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse))

	tests := []struct {
		name      string
		in        []byte
		tid       [stun.TransactionIDSize]byte
		wantOK    bool
		wantRelay string
	}{
		{name: "allocate success", in: ok.Raw, tid: tid, wantOK: true, wantRelay: "127.0.0.1:40001"},
		{name: "other transaction", in: ok.Raw, tid: stun.NewTransactionID(), wantOK: false},
		{name: "a request is no response", in: req.Raw, tid: tid, wantOK: false},
		{name: "channel data", in: probePacket(channelNumber, 0, 0, 0, 20), tid: tid, wantOK: false},
		{name: "truncated", in: ok.Raw[:len(ok.Raw)-3], tid: tid, wantOK: false},
		{name: "success without relay", in: noRelay.Raw, tid: tid, wantOK: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, got := decodeResponse(tc.in, tc.tid)
			if got != tc.wantOK {
				t.Fatalf("ok = %v, want %v", got, tc.wantOK)
			}
			if !got {
				return
			}
			addr, err := relayedAddress(m)
			if tc.wantRelay == "" {
				if err == nil {
					t.Fatalf("relayed address %s from a response without one", addr)
				}
				return
			}
			if err != nil || addr.String() != tc.wantRelay {
				t.Fatalf("relayed %s, %v; want %s", addr, err, tc.wantRelay)
			}
		})
	}
}

func TestIsBindingResponse(t *testing.T) {
	res := make([]byte, stunHeader)
	binary.BigEndian.PutUint16(res[0:2], bindingResponse)
	binary.BigEndian.PutUint32(res[4:8], stunMagic)
	req := bytes.Clone(res)
	binary.BigEndian.PutUint16(req[0:2], bindingRequest)
	noMagic := bytes.Clone(res)
	noMagic[4] = 0
	tests := []struct {
		name string
		in   []byte
		want bool
	}{
		{"response", res, true},
		{"request", req, false},
		{"no magic cookie", noMagic, false},
		{"short", res[:10], false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := isBindingResponse(tc.in); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRESTCredentials(t *testing.T) {
	// The vector is coturn's scheme computed independently:
	// printf '%s' 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64
	user, pass := restCredentials("secret", "alice", time.Unix(1700000000, 0))
	if user != "1700000000:alice" || pass != "d8soP47RbdIKLDUOpnJPVQyq5Ts=" {
		t.Fatalf("got %q %q", user, pass)
	}
}

// FuzzServerReplies: every parser of what a server sends back takes any
// bytes without panicking.
func FuzzServerReplies(f *testing.F) {
	f.Add(probePacket(channelNumber, 1, 2, 3, 40))
	tid := stun.NewTransactionID()
	m, _ := stun.Build(stun.NewTransactionIDSetter(tid), stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse),
		attrAs{stun.XORMappedAddress{IP: []byte{127, 0, 0, 1}, Port: 1}, stun.AttrXORRelayedAddress})
	f.Add(m.Raw)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, data, ok := parseChannelData(b); ok {
			parseProbe(data)
		}
		isBindingResponse(b)
		if m, ok := decodeResponse(b, tid); ok {
			relayedAddress(m)
			responseError(m)
		}
	})
}

func TestErrorResponse(t *testing.T) {
	tests := []struct {
		code     stun.ErrorCode
		mismatch bool
	}{
		{437, true},
		{401, false},
		{486, false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(int(tc.code)), func(t *testing.T) {
			m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse), tc.code)
			if err != nil {
				t.Fatal(err)
			}
			err = fmt.Errorf("setup: %w", responseError(m))
			if isAllocationMismatch(err) != tc.mismatch {
				t.Fatalf("%v: mismatch %v, want %v", err, !tc.mismatch, tc.mismatch)
			}
		})
	}
	if err := responseError(&stun.Message{Type: stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse)}); err != nil {
		t.Fatalf("success response gave %v", err)
	}
}
