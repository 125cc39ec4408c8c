// Package registry starts real OCI registries for tests: Debian's
// docker-registry (distribution 2.8) on 127.0.0.1 with a random port and a
// temporary storage dir, open, with htpasswd Basic auth, with TLS from a CA
// made per registry, or with token auth served by a small loopback token
// server. It also builds test images from busybox-static (see images.go)
// and seeds them into a registry over the distribution API.
//
// The resolver conformance suite, the docker resolver's tests, test/e2e and
// test/bench share it. It imports nothing of keel but sdk/.
package registry

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// Binary is the registry executable Start runs.
const Binary = "docker-registry"

// ErrNoRegistry is returned by Start when the registry executable is not
// installed; tests skip (or fail under KEEL_TEST_STRICT=1) on it.
var ErrNoRegistry = errors.New("docker-registry is not installed (apt-get install docker-registry)")

// TB is the part of testing.TB (and conformance.T) the fixture needs.
type TB interface {
	Helper()
	Cleanup(func())
	TempDir() string
	Logf(format string, args ...any)
}

// Auth is how a registry authenticates clients.
type Auth int

const (
	// Open lets everyone read and write.
	Open Auth = iota
	// Basic is htpasswd HTTP Basic auth.
	Basic
	// Token is the bearer token flow: a 401 challenge naming the token
	// server, which hands out JWTs for Basic credentials.
	Token
)

func (a Auth) String() string {
	return [...]string{"open", "basic", "token"}[a]
}

// Options choose a registry's variant.
type Options struct {
	Auth Auth
	// TLS serves HTTPS with a certificate from a CA made for the registry
	// (Registry.CAFile).
	TLS bool
}

// Registry is a running registry.
type Registry struct {
	// Host is "127.0.0.1:port".
	Host string
	// Username and Password are accepted when Auth is Basic or Token.
	Username, Password string
	// CAFile is the PEM CA that signed the TLS certificate (TLS only).
	CAFile string
	// CA is CAFile's certificate pool.
	CA *x509.CertPool
	// Storage is the registry's storage directory (the filesystem
	// driver's root): a blob's bytes are in
	// docker/registry/v2/blobs/<alg>/<2 hex>/<hex>/data under it.
	Storage string
	opts    Options

	tokenKey  *ecdsa.PrivateKey
	tokenCert []byte // DER
	// TokenRequests counts the token server's answers (Token only).
	tokenRequests int
	mu            sync.Mutex
	pid           int
}

// Pid is the registry process's (for benchmarks measuring its CPU).
func (r *Registry) Pid() int { return r.pid }

// Variants lists the four variants the issue asks for, by name.
var Variants = map[string]Options{
	"open":  {},
	"basic": {Auth: Basic},
	"tls":   {TLS: true},
	"token": {Auth: Token},
}

// Start runs a registry for t and stops it in t.Cleanup.
func Start(t TB, opts Options) (*Registry, error) {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		return nil, ErrNoRegistry
	}
	dir := t.TempDir()
	r := &Registry{Username: "keel", Password: "s3cret-" + randomHex(4), Storage: filepath.Join(dir, "data"), opts: opts}

	var cfg strings.Builder
	fmt.Fprintf(&cfg, "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n")
	fmt.Fprintf(&cfg, "storage:\n  filesystem:\n    rootdirectory: %s\n  delete:\n    enabled: true\n", r.Storage)
	switch opts.Auth {
	case Basic:
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			return nil, err
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(r.Username+":"+string(hash)+"\n"), 0o600); err != nil {
			return nil, err
		}
		fmt.Fprintf(&cfg, "auth:\n  htpasswd:\n    realm: keel-test\n    path: %s\n", htpasswd)
	case Token:
		realm, bundle, err := r.startTokenServer(t, dir)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&cfg, "auth:\n  token:\n    realm: %s\n    service: keel-registry\n    issuer: keel-test\n    rootcertbundle: %s\n", realm, bundle)
	}

	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		r.Host = fmt.Sprintf("127.0.0.1:%d", port)
		http := fmt.Sprintf("http:\n  addr: %s\n  secret: %s\n", r.Host, randomHex(16))
		if opts.TLS {
			cert, key, err := r.makeTLS(dir)
			if err != nil {
				return nil, err
			}
			http += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", cert, key)
		}
		file := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(file, []byte(cfg.String()+http), 0o600); err != nil {
			return nil, err
		}
		if lastErr = r.run(t, bin, file, dir); lastErr == nil {
			return r, nil
		}
	}
	return nil, lastErr
}

// run starts the registry process and waits until it answers.
func (r *Registry) run(t TB, bin, config, dir string) error {
	var out bytes.Buffer
	cmd := exec.Command(bin, "serve", config)
	cmd.Stdout, cmd.Stderr = &lockedWriter{w: &out}, &lockedWriter{w: &out}
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Kill()
		<-exited
	}
	client := r.adminClient()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			exited <- err
			stop()
			return fmt.Errorf("registry exited: %v: %s", err, out.String())
		default:
		}
		resp, err := client.Get(r.URL() + "/v2/")
		if err == nil {
			resp.Body.Close()
			r.pid = cmd.Process.Pid
			t.Cleanup(stop)
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return fmt.Errorf("registry on %s did not answer in 15s: %s", r.Host, out.String())
}

// Scheme is "https" for a TLS registry, else "http".
func (r *Registry) Scheme() string {
	if r.opts.TLS {
		return "https"
	}
	return "http"
}

// URL is the registry's base URL.
func (r *Registry) URL() string { return r.Scheme() + "://" + r.Host }

// Options returns the variant the registry was started with.
func (r *Registry) Options() Options { return r.opts }

// TokenRequests counts the tokens the token server issued.
func (r *Registry) TokenRequests() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.tokenRequests
}

// HostConfig is the docker resolver's `host "<Host>" {}` settings (as
// JSON-ready map) that reach this registry with its credentials.
func (r *Registry) HostConfig() map[string]any {
	h := map[string]any{}
	if r.opts.TLS {
		h["ca_file"] = r.CAFile
	} else {
		h["plain_http"] = true
	}
	if r.opts.Auth != Open {
		h["username"] = r.Username
		h["password"] = r.Password
	}
	return h
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return fmt.Sprintf("%x", b)
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// makeTLS writes a CA and a certificate it signs for 127.0.0.1/localhost.
func (r *Registry) makeTLS(dir string) (certFile, keyFile string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "keel test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	r.CAFile = filepath.Join(dir, "ca.pem")
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{r.CAFile, "CERTIFICATE", caDER}, {certFile, "CERTIFICATE", der}, {keyFile, "EC PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return "", "", err
		}
	}
	r.CA = x509.NewCertPool()
	r.CA.AddCert(caCert)
	return certFile, keyFile, nil
}

// startTokenServer runs the token server on loopback: it checks Basic
// credentials (anonymous requests get pull-less tokens) and signs a JWT
// granting the scopes asked for. The registry trusts the signing
// certificate through its rootcertbundle.
func (r *Registry) startTokenServer(t TB, dir string) (realm, bundle string, err error) {
	r.tokenKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(3),
		Subject:               pkix.Name{CommonName: "keel test token issuer"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	r.tokenCert, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &r.tokenKey.PublicKey, r.tokenKey)
	if err != nil {
		return "", "", err
	}
	bundle = filepath.Join(dir, "token-ca.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.tokenCert}), 0o600); err != nil {
		return "", "", err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", "", err
	}
	srv := &http.Server{Handler: http.HandlerFunc(r.serveToken)}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String() + "/token", bundle, nil
}

func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	user, pass, ok := req.BasicAuth()
	if ok && (user != r.Username || pass != r.Password) {
		http.Error(w, "bad credentials", http.StatusUnauthorized)
		return
	}
	var access []map[string]any
	if ok {
		for _, scope := range req.URL.Query()["scope"] {
			access = append(access, scopeAccess(scope)...)
		}
	}
	tok, err := r.signToken(req.URL.Query().Get("service"), user, access)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	r.mu.Lock()
	r.tokenRequests++
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": 300, "issued_at": time.Now().UTC().Format(time.RFC3339)})
}

// scopeAccess parses "repository:name:pull,push" (names may hold ':' for
// a port, so the actions are after the last one).
func scopeAccess(scope string) []map[string]any {
	typ, rest, ok := strings.Cut(scope, ":")
	if !ok {
		return nil
	}
	i := strings.LastIndex(rest, ":")
	if i < 0 {
		return nil
	}
	return []map[string]any{{"type": typ, "name": rest[:i], "actions": strings.Split(rest[i+1:], ",")}}
}

func (r *Registry) signToken(service, subject string, access []map[string]any) (string, error) {
	now := time.Now()
	if access == nil {
		access = []map[string]any{}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
		"iss":    "keel-test",
		"sub":    subject,
		"aud":    service,
		"exp":    now.Add(5 * time.Minute).Unix(),
		"nbf":    now.Add(-time.Minute).Unix(),
		"iat":    now.Unix(),
		"jti":    randomHex(8),
		"access": access,
	})
	tok.Header["x5c"] = []string{base64.StdEncoding.EncodeToString(r.tokenCert)}
	return tok.SignedString(r.tokenKey)
}

// adminClient is an HTTP client that trusts the registry's CA.
func (r *Registry) adminClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.opts.TLS && r.CA != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: r.CA}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// authorize adds the fixture's own full-access credentials to req.
func (r *Registry) authorize(req *http.Request, repo string) error {
	switch r.opts.Auth {
	case Basic:
		req.SetBasicAuth(r.Username, r.Password)
	case Token:
		tok, err := r.signToken("keel-registry", r.Username, []map[string]any{{"type": "repository", "name": repo, "actions": []string{"pull", "push", "delete"}}})
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return nil
}

// do sends one authorized request of the seeding client.
func (r *Registry) do(ctx context.Context, repo, method, url, contentType string, body []byte) (*http.Response, error) {
	if strings.HasPrefix(url, "/") {
		url = r.URL() + url
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if err := r.authorize(req, repo); err != nil {
		return nil, err
	}
	return r.adminClient().Do(req)
}
