package docker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/resolver"
)

// creds is a username and secret; never logged.
type creds struct {
	user, secret string
}

// dockerConfigFile is the part of Docker's config.json read here.
type dockerConfigFile struct {
	Auths map[string]struct {
		Auth          string `json:"auth"`
		Username      string `json:"username"`
		Password      string `json:"password"`
		IdentityToken string `json:"identitytoken"`
	} `json:"auths"`
	CredHelpers map[string]string `json:"credHelpers"`
	CredsStore  string            `json:"credsStore"`
}

// credentials finds the credentials for h: the call's (upstream only),
// its own config, then the Docker config file (auths, then a credential
// helper). Empty means anonymous.
func (r *Resolver) credentials(ctx context.Context, h *host) (creds, error) {
	if c, ok := callCredentials(ctx, h); ok {
		return c, nil
	}
	ep := h.ep
	switch {
	case ep.Username != "" || ep.Password != "":
		return creds{ep.Username, ep.Password}, nil
	case ep.Auth != "":
		return decodeAuth(ep.Auth, h.registry)
	case ep.CredentialHelper != "":
		return credentialHelper(ctx, ep.CredentialHelper, h.registry)
	}
	if r.cfg.dockerConfig == "" {
		return creds{}, nil
	}
	b, err := os.ReadFile(r.cfg.dockerConfig)
	if os.IsNotExist(err) {
		return creds{}, nil
	}
	if err != nil {
		return creds{}, fmt.Errorf("docker_config: %w", err)
	}
	var f dockerConfigFile
	if err := json.Unmarshal(b, &f); err != nil {
		return creds{}, fmt.Errorf("docker_config %s: %v: %w", r.cfg.dockerConfig, err, errdefs.ErrInvalidArgument)
	}
	keys := []string{h.registry, "https://" + h.registry, "http://" + h.registry}
	if h.registry == "docker.io" {
		keys = append(keys, "https://index.docker.io/v1/", "index.docker.io")
	}
	for _, k := range keys {
		if helper, ok := f.CredHelpers[k]; ok {
			return credentialHelper(ctx, helper, h.registry)
		}
	}
	for _, k := range keys {
		a, ok := f.Auths[k]
		if !ok {
			continue
		}
		switch {
		case a.IdentityToken != "":
			return creds{"<token>", a.IdentityToken}, nil
		case a.Auth != "":
			return decodeAuth(a.Auth, h.registry)
		default:
			return creds{a.Username, a.Password}, nil
		}
	}
	if f.CredsStore != "" {
		return credentialHelper(ctx, f.CredsStore, h.registry)
	}
	return creds{}, nil
}

func decodeAuth(auth, registry string) (creds, error) {
	b, err := base64.StdEncoding.DecodeString(auth)
	if err != nil {
		return creds{}, fmt.Errorf("auth for %s is not base64: %w", registry, errdefs.ErrInvalidArgument)
	}
	user, pass, ok := strings.Cut(string(b), ":")
	if !ok {
		return creds{}, fmt.Errorf("auth for %s is not base64 user:password: %w", registry, errdefs.ErrInvalidArgument)
	}
	return creds{user, pass}, nil
}

// credentialHelper runs docker-credential-<name> get with the registry on
// stdin, as Docker does. "credentials not found" is anonymous.
func credentialHelper(ctx context.Context, name, registry string) (creds, error) {
	bin := "docker-credential-" + name
	cmd := exec.CommandContext(ctx, bin, "get")
	cmd.Stdin = strings.NewReader(registry)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stdout.String() + stderr.String())
		if strings.Contains(msg, "credentials not found") {
			return creds{}, nil
		}
		// The helper's output is not quoted: it might hold a secret.
		return creds{}, fmt.Errorf("credential helper %s for %s: %v: %w", bin, registry, err, errdefs.ErrUnavailable)
	}
	var out struct{ Username, Secret string }
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return creds{}, fmt.Errorf("credential helper %s for %s: answer is not JSON: %w", bin, registry, errdefs.ErrUnavailable)
	}
	return creds{out.Username, out.Secret}, nil
}

// authCache remembers, per host, how it authenticates: Basic, or bearer
// tokens per scope set, with their expiry.
type authCache struct {
	mu     sync.Mutex
	basic  map[string]bool             // host → challenged for Basic
	tokens map[string]map[string]token // host → scope key → token
}

type token struct {
	value   string
	expires time.Time
}

// TakesCallCredentials: the resolver logs in to a reference's registry
// (not its mirrors) with the credentials a call carries.
func (r *Resolver) TakesCallCredentials() {}

var _ resolver.CallCredentialsTaker = (*Resolver)(nil)

// callCredentials are the call's credentials, for h when it is the
// reference's registry itself: a mirror is another party, which gets only
// what its own config says.
func callCredentials(ctx context.Context, h *host) (creds, bool) {
	c, ok := resolver.CredentialsFrom(ctx)
	if !ok || h.role != "upstream" {
		return creds{}, false
	}
	if c.IdentityToken != "" {
		return creds{"<token>", c.IdentityToken}, true
	}
	return creds{c.Username, c.Secret}, true
}

// tokenKey is where a bearer token for scopes is cached for h: per scope
// set, and per login when the call carries its own, so that a token one
// call's credentials earned never serves a call without them.
func tokenKey(ctx context.Context, h *host, scopes []string) string {
	s := append([]string(nil), scopes...)
	sort.Strings(s)
	key := strings.Join(s, " ")
	if c, ok := callCredentials(ctx, h); ok {
		sum := sha256.Sum256([]byte(c.user + "\x00" + c.secret))
		key += " login:" + hex.EncodeToString(sum[:])
	}
	return key
}

// authorize sets what is known to be needed on req.
func (r *Resolver) authorize(ctx context.Context, h *host, req *http.Request, scopes []string) error {
	r.auth.mu.Lock()
	basic := r.auth.basic[h.host]
	tok, ok := r.auth.tokens[h.host][tokenKey(ctx, h, scopes)]
	r.auth.mu.Unlock()
	switch {
	case ok && time.Now().Before(tok.expires):
		req.Header.Set("Authorization", "Bearer "+tok.value)
	case basic:
		c, err := r.credentials(ctx, h)
		if err != nil {
			return err
		}
		req.SetBasicAuth(c.user, c.secret)
	}
	return nil
}

// challenge handles a 401: it learns the scheme from WWW-Authenticate and
// fetches a bearer token for scopes. It reports whether a retry may
// succeed.
func (r *Resolver) challenge(ctx context.Context, h *host, resp *http.Response, scopes []string) (bool, error) {
	scheme, params := parseChallenge(resp.Header.Get("WWW-Authenticate"))
	switch scheme {
	case "basic":
		r.auth.mu.Lock()
		had := r.auth.basic[h.host]
		r.auth.basic[h.host] = true
		r.auth.mu.Unlock()
		c, err := r.credentials(ctx, h)
		if err != nil {
			return false, err
		}
		// Sent already, or nothing to send: a retry would fail the same.
		return !had && c.user != "", nil
	case "bearer":
		key := tokenKey(ctx, h, scopes)
		// A token that was refused is dropped, and a fresh one fetched.
		r.auth.mu.Lock()
		delete(r.auth.tokens[h.host], key)
		r.auth.mu.Unlock()
		if s := params["scope"]; s != "" {
			scopes = append(scopes, strings.Fields(s)...)
		}
		tok, err := r.fetchToken(ctx, h, params["realm"], params["service"], scopes)
		if err != nil {
			return false, err
		}
		r.auth.mu.Lock()
		if r.auth.tokens[h.host] == nil {
			r.auth.tokens[h.host] = map[string]token{}
		}
		r.auth.tokens[h.host][key] = tok
		r.auth.mu.Unlock()
		return true, nil
	}
	return false, nil
}

// fetchToken asks realm for a token (GET, with Basic credentials when
// there are some; an identity token is a refresh token, sent by POST).
func (r *Resolver) fetchToken(ctx context.Context, h *host, realm, service string, scopes []string) (token, error) {
	if realm == "" {
		return token{}, fmt.Errorf("%s: bearer challenge without realm: %w", h.host, errdefs.ErrPermissionDenied)
	}
	u, err := url.Parse(realm)
	if err != nil {
		return token{}, fmt.Errorf("%s: token realm %q: %w", h.host, realm, errdefs.ErrPermissionDenied)
	}
	c, err := r.credentials(ctx, h)
	if err != nil {
		return token{}, err
	}
	q := u.Query()
	if service != "" {
		q.Set("service", service)
	}
	for _, s := range dedupe(scopes) {
		q.Add("scope", s)
	}
	var req *http.Request
	if c.user == "<token>" {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {c.secret}, "service": {service}, "client_id": {"keel"}, "scope": {strings.Join(dedupe(scopes), " ")}}
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
		if err == nil {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
	} else {
		u.RawQuery = q.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err == nil && c.user != "" {
			req.SetBasicAuth(c.user, c.secret)
		}
	}
	if err != nil {
		return token{}, err
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return token{}, fmt.Errorf("%s: token from %s: %v: %w", h.host, u.Host, err, errdefs.ErrUnavailable)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return token{}, fmt.Errorf("%s: token from %s: %s: %w", h.host, u.Host, resp.Status, classify(resp.StatusCode))
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return token{}, fmt.Errorf("%s: token from %s: %v: %w", h.host, u.Host, err, errdefs.ErrUnavailable)
	}
	t := token{value: body.Token}
	if t.value == "" {
		t.value = body.AccessToken
	}
	exp := time.Duration(body.ExpiresIn) * time.Second
	if exp < time.Minute {
		exp = time.Minute
	}
	// Renew a little early rather than be refused mid-transfer.
	t.expires = time.Now().Add(exp * 9 / 10)
	return t, nil
}

func dedupe(ss []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range ss {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// parseChallenge reads `Bearer realm="…",service="…",scope="…"`.
func parseChallenge(h string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params := map[string]string{}
	for rest = strings.TrimSpace(rest); rest != ""; {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		v = strings.TrimSpace(v)
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				params[k] = v[1:]
				break
			}
			params[k] = v[1 : end+1]
			rest = strings.TrimPrefix(strings.TrimSpace(v[end+2:]), ",")
		} else {
			val, more, _ := strings.Cut(v, ",")
			params[k] = val
			rest = more
		}
		rest = strings.TrimSpace(rest)
	}
	return strings.ToLower(scheme), params
}
