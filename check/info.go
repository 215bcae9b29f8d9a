package check

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
)

// serverInfo is the part of GET /api/info the check reads: the server's own
// view of its relay address.
type serverInfo struct {
	TLS  bool `json:"tls"`
	TURN struct {
		RelayAddress   string `json:"relayAddress"`
		PublicIPSet    bool   `json:"publicIpSet"`
		AddressProblem string `json:"addressProblem"`
	} `json:"turn"`
}

// maxInfo bounds what the check reads of /api/info.
const maxInfo = 64 << 10

func decodeInfo(b []byte) (*serverInfo, error) {
	if len(b) > maxInfo {
		return nil, fmt.Errorf("check: /api/info of %d bytes, more than %d", len(b), maxInfo)
	}
	var v serverInfo
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("check: /api/info: %w", err)
	}
	return &v, nil
}

// checkPublicAddress asks the server what relay address it advertises and
// whether it sees a problem with it (a VPS behind 1:1 NAT without
// turn.public_ip): the TURN checks then show whether clients agree.
func (r *runner) checkPublicAddress(ctx context.Context) {
	if r.dnsFailed {
		r.add(NamePublicAddress, Skip, "skipped: "+r.target.Host+" does not resolve", "")
		return
	}
	if r.pageFailed {
		r.add(NamePublicAddress, Skip, "skipped: the web server did not answer (see page)", "")
		return
	}
	sctx, cancel := r.step(ctx)
	defer cancel()
	url := r.target.Base() + "/api/info"
	req, err := http.NewRequestWithContext(sctx, http.MethodGet, url, nil)
	if err != nil {
		r.add(NamePublicAddress, Fail, err.Error(), "")
		return
	}
	client := r.httpClient()
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		r.add(NamePublicAddress, Fail, fmt.Sprintf("GET %s: %s", url, describeNetErr(sctx, err)), "")
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxInfo+1))
	switch {
	case resp.StatusCode == http.StatusNotFound:
		r.add(NamePublicAddress, Skip, "the server has no /api/info (an older callbox, or a proxy that forwards only / and /ws)", "")
		return
	case resp.StatusCode != http.StatusOK:
		r.add(NamePublicAddress, Warn, fmt.Sprintf("GET %s answered %s", url, resp.Status), "")
		return
	case err != nil:
		r.add(NamePublicAddress, Warn, fmt.Sprintf("GET %s: %v", url, err), "")
		return
	}
	info, err := decodeInfo(body)
	if err != nil {
		r.add(NamePublicAddress, Warn, err.Error(), "")
		return
	}
	how := "from the listen address or the host's interfaces; turn.public_ip is unset"
	if info.TURN.PublicIPSet {
		how = "turn.public_ip"
	}
	detail := fmt.Sprintf("the server advertises relay address %s (%s)", info.TURN.RelayAddress, how)
	if p := info.TURN.AddressProblem; p != "" {
		r.add(NamePublicAddress, Fail, detail+": "+p, "set turn.public_ip to the server's public IPv4 address (the one its A record names)")
		return
	}
	r.add(NamePublicAddress, OK, detail, "")
}
