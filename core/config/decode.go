package config

import (
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/host"
)

// fileSchema is the file as written; pointers tell a key left out from a
// key set to its zero value.
type fileSchema struct {
	Root      *string   `hcl:"root,optional"`
	RootRange hcl.Range `hcl:"root,attr_value_range"`

	State      *string   `hcl:"state,optional"`
	StateRange hcl.Range `hcl:"state,attr_value_range"`

	LogLevel      *string   `hcl:"log_level,optional"`
	LogLevelRange hcl.Range `hcl:"log_level,attr_value_range"`

	LogFormat      *string   `hcl:"log_format,optional"`
	LogFormatRange hcl.Range `hcl:"log_format,attr_value_range"`

	PluginDir      *string   `hcl:"plugin_dir,optional"`
	PluginDirRange hcl.Range `hcl:"plugin_dir,attr_value_range"`

	MaxConcurrentDownloads      *int      `hcl:"max_concurrent_downloads,optional"`
	MaxConcurrentDownloadsRange hcl.Range `hcl:"max_concurrent_downloads,attr_value_range"`

	DefaultSnapshotter      *string   `hcl:"default_snapshotter,optional"`
	DefaultSnapshotterRange hcl.Range `hcl:"default_snapshotter,attr_value_range"`

	GRPC    *grpcSchema    `hcl:"grpc,block"`
	Metrics *metricsSchema `hcl:"metrics,block"`
	GC      *gcSchema      `hcl:"gc,block"`
	Events  *eventsSchema  `hcl:"events,block"`
	Limits  *limitsSchema  `hcl:"limits,block"`
	// ContainerLogs: see logs.go.
	ContainerLogs *containerLogsSchema `hcl:"container_logs,block"`
	Network       *networkSchema       `hcl:"network,block"`
	// CRI: see cri.go.
	CRI     *criSchema     `hcl:"cri,block"`
	Plugins []pluginSchema `hcl:"plugin,block"`
}

type grpcSchema struct {
	Address      *string   `hcl:"address,optional"`
	AddressRange hcl.Range `hcl:"address,attr_value_range"`
	UID          *int      `hcl:"uid,optional"`
	UIDRange     hcl.Range `hcl:"uid,attr_value_range"`
	GID          *int      `hcl:"gid,optional"`
	GIDRange     hcl.Range `hcl:"gid,attr_value_range"`
}

type metricsSchema struct {
	Address      *string   `hcl:"address,optional"`
	AddressRange hcl.Range `hcl:"address,attr_value_range"`
}

type pluginSchema struct {
	Kind      string    `hcl:"kind,label"`
	KindRange hcl.Range `hcl:"kind,label_range"`
	Name      string    `hcl:"name,label"`
	NameRange hcl.Range `hcl:"name,label_range"`
	DefRange  hcl.Range `hcl:",def_range"`

	Path        string            `hcl:"path"`
	PathRange   hcl.Range         `hcl:"path,attr_value_range"`
	SHA256      *string           `hcl:"sha256,optional"`
	SHA256Range hcl.Range         `hcl:"sha256,attr_value_range"`
	Env         map[string]string `hcl:"env,optional"`
	EnvRange    hcl.Range         `hcl:"env,attr_value_range"`

	LazyStart      *bool     `hcl:"lazy_start,optional"`
	LazyStartRange hcl.Range `hcl:"lazy_start,attr_value_range"`
	IdleStop       *string   `hcl:"idle_stop,optional"`
	IdleStopRange  hcl.Range `hcl:"idle_stop,attr_value_range"`

	Config *configSchema `hcl:"config,block"`
}

type configSchema struct {
	Body     hcl.Body  `hcl:",remain"`
	DefRange hcl.Range `hcl:",def_range"`
}

// executable is os.Executable; tests pin it so plugin paths are stable.
var executable = os.Executable

var (
	instanceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)
	hexSHA256    = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	envName      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Parse parses and checks a config file's contents; filename is what
// diagnostics name. Every problem found comes back in one *Error.
func Parse(src []byte, filename string) (*Config, error) {
	f, diags := hclsyntax.ParseConfig(src, filename, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, newError(diags)
	}
	var fs fileSchema
	// A nil EvalContext: values are literals, no variables or functions.
	diags = append(diags, gohcl.DecodeBody(f.Body, nil, &fs)...)

	c, more := build(&fs, f.Body.(*hclsyntax.Body), diags)
	diags = append(diags, more...)
	if diags.HasErrors() {
		return nil, newError(diags)
	}
	return c, nil
}

// hclPos matches the positions hcl writes into details ("f:1,2-5",
// "f:1,2-3,4"), rewritten as file:line:col like every other position here.
var hclPos = regexp.MustCompile(`:(\d+),(\d+)(?:-(?:\d+,)?\d+)?\b`)

// newError orders diagnostics by position, so they read top to bottom.
func newError(diags hcl.Diagnostics) *Error {
	for _, d := range diags {
		d.Detail = hclPos.ReplaceAllString(d.Detail, ":$1:$2")
	}
	slices.SortStableFunc(diags, func(a, b *hcl.Diagnostic) int {
		var pa, pb hcl.Pos
		if a.Subject != nil {
			pa = a.Subject.Start
		}
		if b.Subject != nil {
			pb = b.Subject.Start
		}
		return pa.Byte - pb.Byte
	})
	return &Error{Diagnostics: diags}
}

// build applies defaults to the decoded file and checks what the schema
// alone cannot. A value decoding already failed on (in decoded) is not
// reported twice.
func build(fs *fileSchema, body *hclsyntax.Body, decoded hcl.Diagnostics) (*Config, hcl.Diagnostics) {
	var diags hcl.Diagnostics
	fail := func(r hcl.Range, summary, detail string, args ...any) {
		for _, d := range decoded {
			if d.Subject != nil && d.Subject.Start == r.Start {
				return
			}
		}
		diags = append(diags, &hcl.Diagnostic{
			Severity: hcl.DiagError,
			Summary:  summary,
			Detail:   fmt.Sprintf(detail, args...),
			Subject:  r.Ptr(),
		})
	}
	absDir := func(v *string, r hcl.Range, key, def string) string {
		if v == nil {
			return def
		}
		if !filepath.IsAbs(*v) {
			fail(r, "Invalid "+key, "%s must be an absolute path, not %q.", key, *v)
			return *v
		}
		return filepath.Clean(*v)
	}

	c := &Config{
		Root:     absDir(fs.Root, fs.RootRange, "root", DefaultRoot),
		State:    absDir(fs.State, fs.StateRange, "state", DefaultState),
		LogLevel: DefaultLogLevel,
		Plugins:  []Plugin{},

		MaxConcurrentDownloads: DefaultMaxConcurrentDownloads,
	}
	if n := fs.MaxConcurrentDownloads; n != nil {
		c.MaxConcurrentDownloads = *n
		if *n < 1 || *n > MaxConcurrentDownloadsCeiling {
			fail(fs.MaxConcurrentDownloadsRange, "Invalid max_concurrent_downloads", "max_concurrent_downloads must be from 1 to %d, not %d.", MaxConcurrentDownloadsCeiling, *n)
		}
	}
	if fs.LogLevel != nil {
		c.LogLevel = *fs.LogLevel
		if !slices.Contains(LogLevels, c.LogLevel) {
			fail(fs.LogLevelRange, "Invalid log_level", "log_level %q is none of %s.", c.LogLevel, strings.Join(LogLevels, ", "))
		}
	}

	c.LogFormat = DefaultLogFormat
	if fs.LogFormat != nil {
		c.LogFormat = *fs.LogFormat
		if !slices.Contains(LogFormats, c.LogFormat) {
			fail(fs.LogFormatRange, "Invalid log_format", "log_format %q is none of %s.", c.LogFormat, strings.Join(LogFormats, ", "))
		}
	}

	if fs.PluginDir != nil && *fs.PluginDir != "" {
		c.PluginDir = absDir(fs.PluginDir, fs.PluginDirRange, "plugin_dir", "")
	} else if exe, err := executable(); err == nil {
		c.PluginDir = filepath.Dir(exe)
	}

	c.GRPC.Address = filepath.Join(c.State, DefaultSocketName)
	if g := fs.GRPC; g != nil {
		if g.Address != nil {
			c.GRPC.Address = *g.Address
			if !filepath.IsAbs(c.GRPC.Address) {
				fail(g.AddressRange, "Invalid grpc address", "grpc address must be the absolute path of a unix socket, not %q.", c.GRPC.Address)
			}
		}
		if g.UID != nil {
			c.GRPC.UID = *g.UID
			if c.GRPC.UID < 0 {
				fail(g.UIDRange, "Invalid grpc uid", "uid must not be negative.")
			}
		}
		if g.GID != nil {
			c.GRPC.GID = *g.GID
			if c.GRPC.GID < 0 {
				fail(g.GIDRange, "Invalid grpc gid", "gid must not be negative.")
			}
		}
	}
	if m := fs.Metrics; m != nil && m.Address != nil && *m.Address != "" {
		c.Metrics.Address = *m.Address
		if _, _, err := net.SplitHostPort(c.Metrics.Address); err != nil {
			fail(m.AddressRange, "Invalid metrics address", "metrics address %q is not host:port: %v.", c.Metrics.Address, err)
		}
	}

	if g := fs.GC; g != nil {
		c.GC = decodeGC(g, fail)
	}
	if e := fs.Events; e != nil {
		c.Events = decodeEvents(e, fail)
	}
	if l := fs.Limits; l != nil {
		c.Limits = decodeLimits(l, fail)
	}
	c.ContainerLogs = decodeContainerLogs(fs.ContainerLogs, fail)
	if n := fs.Network; n != nil {
		c.Network = decodeNetwork(n, fail)
	}
	if cr := fs.CRI; cr != nil {
		c.CRI = decodeCRI(cr, c, fail)
	}

	seen := map[string]hcl.Range{}
	for i := range fs.Plugins {
		ps := &fs.Plugins[i]
		p := Plugin{Kind: ps.Kind, Name: ps.Name, Range: ps.DefRange, ConfigRange: ps.DefRange, Config: []byte("{}"),
			KindRange: ps.KindRange, PathRange: orRange(ps.PathRange, ps.DefRange), SHA256Range: orRange(ps.SHA256Range, ps.DefRange)}
		if !slices.Contains(sdk.Kinds, p.Kind) {
			fail(ps.KindRange, "Unknown plugin kind", "plugin kind %q is none of %s.", p.Kind, strings.Join(sdk.Kinds, ", "))
		}
		if !instanceName.MatchString(p.Name) {
			fail(ps.NameRange, "Invalid plugin name", "plugin name %q must start with a letter or digit and hold only letters, digits, '.', '_' and '-'.", p.Name)
		}
		if prev, ok := seen[p.Instance()]; ok {
			fail(ps.NameRange, "Duplicate plugin", "plugin %q %q is already defined at %s.", p.Kind, p.Name, formatPos(prev))
			continue
		}
		seen[p.Instance()] = ps.DefRange

		switch {
		case ps.PathRange == (hcl.Range{}):
			// Missing: gohcl has said so.
		case ps.Path == "":
			fail(ps.PathRange, "Invalid plugin path", "path must name the plugin's executable.")
		case filepath.IsAbs(ps.Path):
			p.Path = filepath.Clean(ps.Path)
		case c.PluginDir == "":
			fail(ps.PathRange, "Invalid plugin path", "relative path %q needs plugin_dir: the keeld executable's directory is unknown.", ps.Path)
		default:
			p.Path = filepath.Join(c.PluginDir, ps.Path)
		}

		if ps.SHA256 != nil && *ps.SHA256 != "" {
			if hexSHA256.MatchString(*ps.SHA256) {
				p.SHA256 = strings.ToLower(*ps.SHA256)
			} else {
				fail(ps.SHA256Range, "Invalid sha256", "sha256 must be 64 hex digits, not %q.", *ps.SHA256)
			}
		}

		for _, k := range slices.Sorted(maps.Keys(ps.Env)) {
			switch {
			case !envName.MatchString(k):
				fail(ps.EnvRange, "Invalid plugin env", "env name %q must be letters, digits and '_', not starting with a digit.", k)
			case host.ReservedEnv(k):
				fail(ps.EnvRange, "Invalid plugin env", "env name %q is keeld's to set: the plugin handshake uses PLUGIN_* and KEEL_PLUGIN*.", k)
			default:
				if p.Env == nil {
					p.Env = map[string]string{}
				}
				p.Env[k] = ps.Env[k]
			}
		}

		p.IdleStop = Duration(DefaultIdleStop)
		decodeDuration(fail, ps.IdleStop, ps.IdleStopRange, "plugin idle_stop", &p.IdleStop)
		if ps.LazyStart != nil {
			p.LazyStart = *ps.LazyStart
			if p.LazyStart && p.Kind == sdk.KindRuntime {
				fail(ps.LazyStartRange, "Invalid lazy_start", "a runtime plugin starts with keeld, to adopt the tasks that run: lazy_start must be false for it (idle_stop stops it while it has no task).")
			}
		}

		if cb := ps.Config; cb != nil {
			p.ConfigRange = cb.DefRange
			raw, keys, more := blockJSON(cb.Body)
			diags = append(diags, more...)
			if raw != nil {
				p.Config, p.configKeys = raw, keys
			}
		}
		c.Plugins = append(c.Plugins, p)
	}

	contents := c.PluginsOf(sdk.KindContent)
	switch {
	case len(contents) == 0:
		fail(startOf(body), "No content plugin", `keeld needs exactly one content store: add a plugin "content" "<name>" block, e.g. plugin "content" "local" { path = "keel-content-local" }.`)
	case len(contents) > 1:
		for _, p := range contents[1:] {
			fail(p.Range, "More than one content plugin", "keeld needs exactly one content store; %q is already configured at %s.", contents[0].Name, formatPos(contents[0].Range))
		}
	}

	snaps := c.PluginsOf(sdk.KindSnapshotter)
	switch {
	case fs.DefaultSnapshotter != nil:
		c.DefaultSnapshotter = *fs.DefaultSnapshotter
		if c.Plugin(sdk.KindSnapshotter, c.DefaultSnapshotter) == nil {
			fail(fs.DefaultSnapshotterRange, "Unknown default_snapshotter", "no plugin \"snapshotter\" %q is configured; snapshotters: %s.", c.DefaultSnapshotter, names(snaps))
		}
	case len(snaps) == 1:
		c.DefaultSnapshotter = snaps[0].Name
	case len(snaps) > 1:
		fail(startOf(body), "Missing default_snapshotter", "several snapshotters are configured (%s): default_snapshotter must name the one used when a call names none.", names(snaps))
	}
	return c, diags
}

func names(ps []*Plugin) string {
	if len(ps) == 0 {
		return "none"
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = fmt.Sprintf("%q", p.Name)
	}
	return strings.Join(out, ", ")
}

// orRange is r, or def for a setting left out.
func orRange(r, def hcl.Range) hcl.Range {
	if r == (hcl.Range{}) {
		return def
	}
	return r
}

// startOf is the first position of a file, where problems of the file as a
// whole point.
func startOf(body *hclsyntax.Body) hcl.Range {
	r := body.SrcRange
	return hcl.Range{Filename: r.Filename, Start: r.Start, End: r.Start}
}
