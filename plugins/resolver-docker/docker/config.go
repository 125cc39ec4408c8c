package docker

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Config is the plugin's `config {}` block, as keeld hands it over (JSON).
type Config struct {
	// DockerConfig is a Docker config.json to read credentials from
	// (auths, credHelpers, credsStore).
	DockerConfig string `json:"docker_config"`
	// Host holds the settings per registry host ("docker.io",
	// "127.0.0.1:5000").
	Host map[string]HostConfig `json:"host"`
	// Default applies to hosts not listed in Host.
	Default *HostConfig `json:"default"`

	// Timeout bounds each request until its response headers (default 30s).
	Timeout string `json:"timeout"`
	// StallTimeout aborts and retries a download that made no progress for
	// that long (default 30s).
	StallTimeout string `json:"stall_timeout"`
	// Retries is how many times a failed request is retried (default 3).
	Retries *int `json:"retries"`
	// MaxConnsPerHost bounds the connections to one host (default 16).
	MaxConnsPerHost int `json:"max_conns_per_host"`
	// Parallel is the number of byte ranges a large blob is fetched in at
	// once (default 4; 1 turns parallel fetches off).
	Parallel int `json:"parallel"`
	// PartSize is the size of one range in bytes (default 16 MiB); blobs of
	// at least two parts are fetched in parallel.
	PartSize int64 `json:"part_size"`
	// ChunkSize is the largest blob pushed in one request; larger ones go
	// up in chunks of this size (default 64 MiB).
	ChunkSize int64 `json:"chunk_size"`
	// MaxManifestSize refuses larger manifests (default 4 MiB).
	MaxManifestSize int64 `json:"max_manifest_size"`
}

// Endpoint is how to talk to one host: TLS and credentials.
type Endpoint struct {
	PlainHTTP  bool   `json:"plain_http"`
	SkipVerify bool   `json:"skip_verify"`
	CAFile     string `json:"ca_file"`
	ClientCert string `json:"client_cert"`
	ClientKey  string `json:"client_key"`
	// PathPrefix is put between /v2/ and the repository (pull-through
	// mirrors serving several upstreams under prefixes).
	PathPrefix string `json:"path_prefix"`

	Username string `json:"username"`
	Password string `json:"password"`
	// Auth is base64 "user:password", as in Docker's config.json.
	Auth string `json:"auth"`
	// CredentialHelper names a docker-credential-<name> executable.
	CredentialHelper string `json:"credential_helper"`
}

// HostConfig is one `host "<name>" {}` block.
type HostConfig struct {
	Endpoint
	// Mirror holds the mirrors by URL ("https://mirror:5000/prefix").
	Mirror map[string]Endpoint `json:"mirror"`
	// Mirrors orders the mirrors (keeld's JSON keeps no block order); any
	// mirror not listed follows, in name order.
	Mirrors []string `json:"mirrors"`
	// Fallback to the upstream when every mirror failed (default true).
	Fallback *bool `json:"fallback"`
}

// settings is Config checked, with defaults.
type settings struct {
	timeout, stall      time.Duration
	retries, maxConns   int
	parallel            int
	partSize, chunkSize int64
	maxManifest         int64
	hosts               map[string]HostConfig
	def                 HostConfig
	dockerConfig        string
}

func parseConfig(raw []byte) (*settings, error) {
	var c Config
	if err := (sdk.Env{Config: raw}).DecodeConfig(&c); err != nil {
		return nil, err
	}
	s := &settings{
		timeout: 30 * time.Second, stall: 30 * time.Second, retries: 3, maxConns: 16,
		parallel: 4, partSize: 16 << 20, chunkSize: 64 << 20, maxManifest: 4 << 20,
		hosts: c.Host, dockerConfig: c.DockerConfig,
	}
	for _, d := range []struct {
		name string
		v    string
		to   *time.Duration
	}{{"timeout", c.Timeout, &s.timeout}, {"stall_timeout", c.StallTimeout, &s.stall}} {
		if d.v == "" {
			continue
		}
		v, err := time.ParseDuration(d.v)
		if err != nil || v <= 0 {
			return nil, sdk.ConfigKeyError(d.name, fmt.Errorf("%q is not a positive duration", d.v))
		}
		*d.to = v
	}
	if c.Retries != nil {
		s.retries = max(*c.Retries, 0)
	}
	if c.MaxConnsPerHost > 0 {
		s.maxConns = c.MaxConnsPerHost
	}
	if c.Parallel > 0 {
		s.parallel = c.Parallel
	}
	if c.PartSize > 0 {
		s.partSize = c.PartSize
	}
	if c.ChunkSize > 0 {
		s.chunkSize = c.ChunkSize
	}
	if c.MaxManifestSize > 0 {
		s.maxManifest = c.MaxManifestSize
	}
	if c.Default != nil {
		s.def = *c.Default
	}
	for name, h := range c.Host {
		for _, m := range h.Mirrors {
			if _, ok := h.Mirror[m]; !ok {
				// A listed mirror with no block of its own needs no settings.
				if h.Mirror == nil {
					h.Mirror = map[string]Endpoint{}
				}
				h.Mirror[m] = Endpoint{}
			}
		}
		for m := range h.Mirror {
			if _, err := parseMirror(m); err != nil {
				return nil, sdk.ConfigKeyError("host."+name, err)
			}
		}
		s.hosts[name] = h
	}
	return s, nil
}

// parseMirror reads a mirror's URL: scheme, host and an optional path
// prefix. A bare host means https.
func parseMirror(m string) (*url.URL, error) {
	if !strings.Contains(m, "://") {
		m = "https://" + m
	}
	u, err := url.Parse(m)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("mirror %q is not an http(s) URL: %w", m, errdefs.ErrInvalidArgument)
	}
	return u, nil
}

// host is one place to send requests for a registry: a mirror or the
// upstream, with its own client and credentials.
type host struct {
	role   string // "mirror" or "upstream"
	scheme string
	host   string // host:port
	prefix string // path prefix after /v2/, without slashes around
	ep     Endpoint
	client *http.Client
	// registry is the registry name credentials are looked up under.
	registry string
}

// base is the host's /v2/ URL with its prefix, for messages.
func (h *host) base() string {
	u := h.scheme + "://" + h.host + "/v2/"
	if h.prefix != "" {
		u += h.prefix + "/"
	}
	return u
}

// url is the URL of path ("manifests/<x>", "blobs/uploads/") of repo.
func (h *host) url(repo, path string) string {
	return h.base() + repo + "/" + path
}

// hostsFor lists the hosts to try for registry, mirrors first (in order),
// then the upstream unless fallback is off; skipped notes the upstream
// left out, for --explain.
func (r *Resolver) hostsFor(registry string) (hosts []*host, skipped []string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if hs, ok := r.hostCache[registry]; ok {
		return hs.hosts, hs.skipped, nil
	}
	hc, ok := r.cfg.hosts[registry]
	if !ok {
		hc = r.cfg.def
		// As Docker and containerd do, a registry on this machine that no
		// host block describes is spoken to over plain HTTP: loopback
		// traffic never leaves the host.
		hc.PlainHTTP = hc.PlainHTTP || isLoopback(registry)
	}
	names := append([]string(nil), hc.Mirrors...)
	var rest []string
	for m := range hc.Mirror {
		if !slices.Contains(names, m) {
			rest = append(rest, m)
		}
	}
	sort.Strings(rest)
	names = append(names, rest...)
	for _, m := range names {
		u, err := parseMirror(m)
		if err != nil {
			return nil, nil, err
		}
		ep := hc.Mirror[m]
		prefix := strings.Trim(u.Path, "/")
		prefix = strings.TrimPrefix(strings.TrimPrefix(prefix, "v2"), "/")
		if ep.PathPrefix != "" {
			prefix = strings.Trim(ep.PathPrefix, "/")
		}
		h := &host{role: "mirror", scheme: u.Scheme, host: u.Host, prefix: prefix, ep: ep, registry: u.Host}
		if ep.PlainHTTP {
			h.scheme = "http"
		}
		if h.client, err = r.newClient(ep); err != nil {
			return nil, nil, fmt.Errorf("mirror %q of %s: %w", m, registry, err)
		}
		hosts = append(hosts, h)
	}
	if hc.Fallback == nil || *hc.Fallback || len(hosts) == 0 {
		up := registry
		if registry == "docker.io" {
			up = "registry-1.docker.io"
		}
		h := &host{role: "upstream", scheme: "https", host: up, prefix: strings.Trim(hc.PathPrefix, "/"), ep: hc.Endpoint, registry: registry}
		if hc.PlainHTTP {
			h.scheme = "http"
		}
		if h.client, err = r.newClient(hc.Endpoint); err != nil {
			return nil, nil, fmt.Errorf("host %s: %w", registry, err)
		}
		hosts = append(hosts, h)
	} else {
		skipped = append(skipped, registry)
	}
	r.hostCache[registry] = hostSet{hosts: hosts, skipped: skipped}
	return hosts, skipped, nil
}

// isLoopback tells whether registry ("host[:port]") names this machine.
func isLoopback(registry string) bool {
	host := registry
	if h, _, err := net.SplitHostPort(registry); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type hostSet struct {
	hosts   []*host
	skipped []string
}

// newClient makes the HTTP client of one endpoint: its TLS, bounded
// connections, a timeout for response headers. Redirects are followed
// (to blob storage); Go drops the Authorization header when they leave
// the host.
func (r *Resolver) newClient(ep Endpoint) (*http.Client, error) {
	tlsCfg := &tls.Config{InsecureSkipVerify: ep.SkipVerify}
	if ep.CAFile != "" {
		pem, err := os.ReadFile(ep.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate: %w", ep.CAFile, errdefs.ErrInvalidArgument)
		}
		tlsCfg.RootCAs = pool
	}
	if ep.ClientCert != "" || ep.ClientKey != "" {
		cert, err := tls.LoadX509KeyPair(ep.ClientCert, ep.ClientKey)
		if err != nil {
			return nil, fmt.Errorf("client_cert/client_key: %v: %w", err, errdefs.ErrInvalidArgument)
		}
		tlsCfg.Certificates = []tls.Certificate{cert}
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: r.cfg.timeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   r.cfg.timeout,
		ResponseHeaderTimeout: r.cfg.timeout,
		MaxConnsPerHost:       r.cfg.maxConns,
		MaxIdleConnsPerHost:   r.cfg.maxConns,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     true,
		// Layers are compressed already; gzip transport encoding would
		// only cost CPU and hide Content-Length.
		DisableCompression: true,
		ReadBufferSize:     256 << 10,
		WriteBufferSize:    256 << 10,
	}
	return &http.Client{Transport: tr}, nil
}
