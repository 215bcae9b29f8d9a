package signal

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// turnResponse is the TURN REST API draft's answer
// (draft-uberti-behave-turn-rest-00, section 2.2).
type turnResponse struct {
	Username string   `json:"username"`
	Password string   `json:"password"`
	TTL      int64    `json:"ttl"`
	URIs     []string `json:"uris"`
}

// serveTURN is GET /api/turn: TURN credentials for apps that only want TURN.
// Off (404) unless [signal] api_keys is set.
func (h *Hub) serveTURN(w http.ResponseWriter, r *http.Request) {
	if len(h.conf().APIKeys) == 0 {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	key := r.URL.Query().Get("key")
	if auth := r.Header.Get("Authorization"); key == "" && len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		key = strings.TrimSpace(auth[7:])
	}
	if !keyAllowed(key, h.conf().APIKeys) {
		h.metrics.api.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="callbox"`)
		http.Error(w, "a valid API key is required (key= or Authorization: Bearer)", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	if q.Get("service") != "turn" {
		h.metrics.api.WithLabelValues("bad_request").Inc()
		http.Error(w, `service must be "turn"`, http.StatusBadRequest)
		return
	}
	user := q.Get("username")
	if !validUserID(user) {
		h.metrics.api.WithLabelValues("bad_request").Inc()
		http.Error(w, "username must be 1 to 64 characters of A-Z a-z 0-9 . _ @ -", http.StatusBadRequest)
		return
	}
	servers, expires := h.iceFor(user)
	resp := turnResponse{URIs: []string{}}
	for _, s := range servers {
		var turn []string
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turn:") || strings.HasPrefix(u, "turns:") {
				turn = append(turn, u)
			}
		}
		if len(turn) == 0 || s.Username == "" {
			continue
		}
		if resp.Username == "" {
			resp.Username, resp.Password = s.Username, s.Credential
		}
		if s.Username == resp.Username {
			resp.URIs = append(resp.URIs, turn...)
		}
	}
	if resp.Username == "" {
		h.metrics.api.WithLabelValues("unavailable").Inc()
		http.Error(w, "no TURN server is configured", http.StatusServiceUnavailable)
		return
	}
	if !expires.IsZero() {
		resp.TTL = max(0, int64(time.Until(expires)/time.Second))
	}
	h.metrics.api.WithLabelValues("ok").Inc()
	writeJSON(w, http.StatusOK, resp)
}

// validUserID keeps the USERID of EXPIRY:USERID free of the separator and
// of anything a log line or a TURN server would choke on.
func validUserID(u string) bool {
	if u == "" || len(u) > maxUserIDLen {
		return false
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("._@-", c) >= 0) {
			return false
		}
	}
	return true
}

type health struct {
	Status      string `json:"status"`
	Connections int    `json:"connections"`
	Rooms       int    `json:"rooms"`
	Peers       int    `json:"peers"`
	// Cluster is the Router's status: absent for one process, "ok", or why not.
	Cluster string `json:"cluster,omitempty"`
}

// serveHealth is GET /healthz: 200 while serving, 503 while shutting down.
func (h *Hub) serveHealth(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	s := health{Status: "ok", Connections: len(h.clients), Rooms: len(h.rooms), Peers: len(h.peers)}
	closing := h.closing
	h.mu.Unlock()
	s.Cluster = h.router.Status()
	code := http.StatusOK
	if closing {
		s.Status, code = "shutting_down", http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, code, s)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
