package main

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/pion/stun/v3"
)

// The control plane of the load generator: just enough TURN (RFC 5766) over
// raw pion/stun messages to allocate, bind a channel and release, on a
// plain UDP socket the data plane then uses for raw ChannelData. pion's
// turn.Client would own the socket's read loop and add a goroutine hop per
// packet to the generator, which shares the machine with the server.

const (
	transactionTimeout = 400 * time.Millisecond
	transactionTries   = 4
	// channelNumber is the one channel each allocation binds (0x4000 is
	// the first valid number; allocations are independent).
	channelNumber = 0x4000
)

// restCredentials are coturn's use-auth-secret credentials: username
// "EXPIRY:USER", password base64(HMAC-SHA1(secret, username)). Written
// here rather than imported from turnserver so the bench checks callbox
// against the scheme, not against itself.
func restCredentials(secret, user string, expires time.Time) (username, password string) {
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + user
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// session is one TURN allocation seen from the client.
type session struct {
	conn     *net.UDPConn // connected to the server
	username string
	password string
	realm    string
	nonce    string
	relay    netip.AddrPort
	buf      []byte
}

// allocate opens a socket to server and creates an allocation on it.
func allocate(server netip.AddrPort, username, password string) (*session, error) {
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(server))
	if err != nil {
		return nil, fmt.Errorf("turnbench: dial %s: %w", server, err)
	}
	s := &session{conn: conn, username: username, password: password, buf: make([]byte, 1500)}
	if err := s.allocate(); err != nil {
		conn.Close()
		return nil, err
	}
	return s, nil
}

func (s *session) allocate() error {
	transport := stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}} // UDP
	// The first request carries no credentials: the 401 brings realm and nonce.
	res, err := s.transact(stun.NewType(stun.MethodAllocate, stun.ClassRequest), false, transport)
	if err != nil {
		return fmt.Errorf("turnbench: allocate: %w", err)
	}
	relay, err := relayedAddress(res)
	if err != nil {
		return fmt.Errorf("turnbench: allocate: %w", err)
	}
	s.relay = relay
	return nil
}

// channelBind binds channelNumber to peer; it also installs the permission.
func (s *session) channelBind(peer netip.AddrPort) error {
	var ch [4]byte
	binary.BigEndian.PutUint16(ch[:], channelNumber)
	peerAttr := stun.XORMappedAddress{IP: peer.Addr().AsSlice(), Port: int(peer.Port())}
	res, err := s.transact(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), true,
		stun.RawAttribute{Type: stun.AttrChannelNumber, Value: ch[:]},
		attrAs{peerAttr, stun.AttrXORPeerAddress})
	if err != nil {
		return fmt.Errorf("turnbench: channel bind: %w", err)
	}
	return responseError(res)
}

// release deletes the allocation (Refresh with LIFETIME 0) so the server's
// memory is not held by finished scenarios, and closes the socket.
func (s *session) release() error {
	defer s.conn.Close()
	_, err := s.transact(stun.NewType(stun.MethodRefresh, stun.ClassRequest), true,
		stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}})
	if err != nil {
		return fmt.Errorf("turnbench: release %s: %w", s.relay, err)
	}
	return nil
}

type attrAs struct {
	addr stun.XORMappedAddress
	t    stun.AttrType
}

func (a attrAs) AddTo(m *stun.Message) error { return a.addr.AddToAs(m, a.t) }

// transact sends a request and returns the success response. An error
// response with a new nonce (401 on the first request, 438 when stale) is
// answered once with fresh credentials.
func (s *session) transact(typ stun.MessageType, auth bool, attrs ...stun.Setter) (*stun.Message, error) {
	for attempt := 0; attempt < 2; attempt++ {
		setters := append([]stun.Setter{stun.TransactionID, typ}, attrs...)
		if auth || s.nonce != "" {
			setters = append(setters, stun.NewUsername(s.username), stun.NewRealm(s.realm),
				stun.NewNonce(s.nonce), stun.NewLongTermIntegrity(s.username, s.realm, s.password))
		}
		setters = append(setters, stun.Fingerprint)
		req, err := stun.Build(setters...)
		if err != nil {
			return nil, fmt.Errorf("build %s: %w", typ, err)
		}
		res, err := s.roundTrip(req)
		if err != nil {
			return nil, err
		}
		if res.Type.Class == stun.ClassSuccessResponse {
			return res, nil
		}
		var code stun.ErrorCodeAttribute
		if err := code.GetFrom(res); err != nil {
			return nil, fmt.Errorf("%s: error response without ERROR-CODE", typ)
		}
		if (code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce) && attempt == 0 {
			var realm stun.Realm
			var nonce stun.Nonce
			if realm.GetFrom(res) == nil {
				s.realm = realm.String()
			}
			if err := nonce.GetFrom(res); err != nil {
				return nil, fmt.Errorf("%s: %d without NONCE", typ, code.Code)
			}
			s.nonce = nonce.String()
			continue
		}
		return nil, &errorResponse{method: typ.Method, code: int(code.Code), reason: string(code.Reason)}
	}
	return nil, fmt.Errorf("%s: still unauthorized after a fresh nonce", typ)
}

// roundTrip retransmits req until a response with its transaction ID comes.
func (s *session) roundTrip(req *stun.Message) (*stun.Message, error) {
	for try := 0; try < transactionTries; try++ {
		if _, err := s.conn.Write(req.Raw); err != nil {
			return nil, fmt.Errorf("send %s: %w", req.Type, err)
		}
		deadline := time.Now().Add(transactionTimeout)
		for {
			if err := s.conn.SetReadDeadline(deadline); err != nil {
				return nil, err
			}
			n, err := s.conn.Read(s.buf)
			if isTimeout(err) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read %s response: %w", req.Type, err)
			}
			res, ok := decodeResponse(s.buf[:n], req.TransactionID)
			if ok {
				_ = s.conn.SetReadDeadline(time.Time{})
				return res, nil
			}
			// Anything else (late ChannelData, an old response) is skipped.
		}
	}
	return nil, fmt.Errorf("%s: no response after %d tries", req.Type, transactionTries)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// decodeResponse parses b as a STUN response to the transaction tid.
func decodeResponse(b []byte, tid [stun.TransactionIDSize]byte) (*stun.Message, bool) {
	if !stun.IsMessage(b) {
		return nil, false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil || m.TransactionID != tid {
		return nil, false
	}
	if m.Type.Class != stun.ClassSuccessResponse && m.Type.Class != stun.ClassErrorResponse {
		return nil, false
	}
	return m, true
}

// relayedAddress reads XOR-RELAYED-ADDRESS from an Allocate response.
func relayedAddress(m *stun.Message) (netip.AddrPort, error) {
	var a stun.XORMappedAddress
	if err := a.GetFromAs(m, stun.AttrXORRelayedAddress); err != nil {
		return netip.AddrPort{}, fmt.Errorf("no XOR-RELAYED-ADDRESS: %w", err)
	}
	ip, ok := netip.AddrFromSlice(a.IP)
	if !ok || a.Port <= 0 || a.Port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("bad relayed address %s", a)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.Port)), nil
}

func responseError(m *stun.Message) error {
	if m.Type.Class == stun.ClassSuccessResponse {
		return nil
	}
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(m); err != nil {
		return fmt.Errorf("error response to %s", m.Type.Method)
	}
	return &errorResponse{method: m.Type.Method, code: int(code.Code), reason: string(code.Reason)}
}

// errorResponse is a STUN error response from the server.
type errorResponse struct {
	method stun.Method
	code   int
	reason string
}

func (e *errorResponse) Error() string {
	return fmt.Sprintf("%s: error %d %s", e.method, e.code, e.reason)
}

// codeAllocationMismatch (437): the server still holds an allocation for
// this 5-tuple, as when the kernel hands a new socket the port of one
// whose release was lost.
const codeAllocationMismatch = 437

func isAllocationMismatch(err error) bool {
	var e *errorResponse
	return errors.As(err, &e) && e.code == codeAllocationMismatch
}
