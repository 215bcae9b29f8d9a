package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/callbox/callbox/config"
	"github.com/callbox/callbox/signal"
	"github.com/callbox/callbox/turnserver"
)

// credentials prints TURN REST credentials (draft-uberti-behave-turn-rest-00)
// for an app that wants only TURN, signed with the first configured secret.
func credentials(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("callbox credentials", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "TOML config `file` (its turn.secrets sign the credentials)")
	user := fs.String("user", "", "user `id` put in the username EXPIRY:USER")
	ttl := fs.Duration("ttl", time.Hour, "how long the credentials stay valid")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *path == "":
		return errors.New("credentials: -config is required (the secret is in turn.secrets)")
	case *user == "" || strings.ContainsAny(*user, ": \t\n"):
		return fmt.Errorf("credentials: -user %q: want a non-empty id without ':' or spaces", *user)
	case *ttl < time.Second:
		return fmt.Errorf("credentials: -ttl %s: must be >= 1s", *ttl)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if len(cfg.TURN.Secrets) == 0 {
		return fmt.Errorf("credentials: %s sets no turn.secrets: a server with a random secret cannot be given credentials from outside", *path)
	}
	username, password := turnserver.MintCredentials(cfg.TURN.Secrets[0], *user, time.Now().Add(*ttl))
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(turnserver.Credentials{
		Username: username,
		Password: password,
		TTL:      int64(ttl.Seconds()),
		URIs:     turnserver.ConfiguredTURNURIs(cfg.TURN),
	})
}

// invite prints a link to a room that admits its holder until it expires,
// for servers whose [signal] access is "invite".
func invite(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("callbox invite", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "TOML config `file` (its signal.invite_secret signs the link)")
	room := fs.String("room", "", "room `name`")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the link admits people")
	base := fs.String("url", "", "public base `URL` of the server, as https://call.example.com (default: http:// and http.listen)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" {
		return errors.New("invite: -config is required (the key is signal.invite_secret)")
	}
	if err := signal.ValidRoom(*room); err != nil {
		return fmt.Errorf("invite: -room: %w", err)
	}
	if *ttl < time.Minute {
		return fmt.Errorf("invite: -ttl %s: must be >= 1m", *ttl)
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return err
	}
	if cfg.Signal.InviteSecret == "" {
		return fmt.Errorf("invite: %s sets no signal.invite_secret", *path)
	}
	if cfg.Signal.Access != config.AccessInvite {
		fmt.Fprintf(stderr, "callbox invite: note: signal.access is %q, so the server does not require invites\n", cfg.Signal.Access)
	}
	if *base == "" {
		*base = "http://" + cfg.HTTP.Listen
	}
	token := signal.MintInvite(cfg.Signal.InviteSecret, *room, time.Now().Add(*ttl))
	fmt.Fprintf(stdout, "%s/r/%s?invite=%s\n", strings.TrimSuffix(*base, "/"), url.PathEscape(*room), url.QueryEscape(token))
	return nil
}
