// Package config reads keeld's HCL configuration file.
//
// A file names keeld's directories, its API socket, its log level and one
// plugin block per plugin instance:
//
//	root      = "/var/lib/keel"
//	state     = "/run/keel"
//	log_level = "info"
//	grpc { address = "/run/keel/keel.sock" }
//	plugin "snapshotter" "native" {
//	  path = "keel-snapshotter-native"
//	  config { }
//	}
//	plugin "content" "local" { path = "keel-content-local" }
//
// config.hcl.example at the repository root documents every key. Parse
// checks the whole file and returns every problem at once as an *Error, one
// "file:line:col: summary; detail" line per problem.
//
// # Plugin instances
//
// A plugin block is labelled with its kind (one of sdk.Kinds) and an
// instance name; "<kind>.<name>" is unique in a file. The same executable
// may back several instances under different names: each is its own
// process with its own directories, <root>/plugins/<kind>.<name> and
// <state>/plugins/<kind>.<name>. A relative path resolves against
// plugin_dir, whose default is the directory of the keeld executable.
// keeld needs exactly one content plugin.
//
// # The config block as JSON
//
// A plugin's `config {}` block is free-form: keeld does not know its
// schema, so it hands the block to the plugin as a JSON object. Attribute
// values are literals (strings, numbers, bools, null, lists, maps); no
// variables or functions. Nested blocks map to nested JSON:
//
//	a = 1                          {"a": 1}
//	tls { verify = true }          {"tls": {"verify": true}}
//	rule { x = 1 }                 {"rule": [{"x": 1}, {"x": 2}]}
//	rule { x = 2 }                 (a repeated unlabelled block is an array)
//	host "docker.io" { x = 1 }     {"host": {"docker.io": {"x": 1}}}
//	route "a" "b" { x = 1 }        {"route": {"a": {"b": {"x": 1}}}}
//
// A single unlabelled block is an object, so a plugin that wants a list of
// settings either accepts both shapes or asks for a list attribute. All
// blocks of one type carry the same number of labels, the same labels
// never appear twice, and a block never shares its name with an attribute.
package config

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/hcl/v2"

	"github.com/keel-runtime/keel/sdk"
	"github.com/keel-runtime/keel/sdk/errdefs"
	"github.com/keel-runtime/keel/sdk/mount"
)

// DefaultPath is where keeld looks for its config file.
const DefaultPath = "/etc/keel/config.hcl"

// Defaults of the keys a file may leave out.
const (
	DefaultRoot     = "/var/lib/keel"
	DefaultState    = "/run/keel"
	DefaultLogLevel = "info"
	// DefaultLogFormat is keeld's log as lines of text (LogFormats).
	DefaultLogFormat = "text"
	// DefaultMaxConcurrentDownloads bounds the blobs a pull fetches at once.
	DefaultMaxConcurrentDownloads = 3
	// The API socket defaults to <state>/keel.sock.
	DefaultSocketName = "keel.sock"
	// DefaultIdleStop is a plugin block's idle_stop when it has none: a
	// plugin (a runtime: one without tasks) unused this long is stopped
	// and started again by its next call, so an idle node runs keeld
	// alone.
	DefaultIdleStop = 30 * time.Second
)

// LogLevels are the values log_level accepts, most verbose first.
var LogLevels = []string{"trace", "debug", "info", "warn", "error"}

// LogFormats are the values log_format accepts: lines of text, or one JSON
// object per line (hclog's JSONFormat).
var LogFormats = []string{"text", "json"}

// Config is keeld's configuration, checked and with defaults applied.
type Config struct {
	// File is the file the config was loaded from; "" for the embedded
	// default.
	File string `json:"-"`
	// Root holds persistent data, State runtime data (sockets, pids).
	Root  string `json:"root"`
	State string `json:"state"`
	// LogLevel is one of LogLevels.
	LogLevel string `json:"log_level"`
	// LogFormat is one of LogFormats.
	LogFormat string `json:"log_format"`
	// PluginDir is where relative plugin paths were resolved.
	PluginDir string  `json:"plugin_dir"`
	GRPC      GRPC    `json:"grpc"`
	Metrics   Metrics `json:"metrics"`
	// GC tunes garbage collection; nil when the file has no gc block
	// (defaults apply, see GCInterval).
	GC *GC `json:"gc,omitempty"`
	// Events tunes the event exchange; nil when the file has no events
	// block (see EventsWindow).
	Events *Events `json:"events,omitempty"`
	// Limits bound the work one image may cause; nil when the file has
	// no limits block (defaults apply).
	Limits *Limits `json:"limits,omitempty"`
	// ContainerLogs are the rotation defaults of containers' logs.
	ContainerLogs ContainerLogs `json:"container_logs"`
	// Network is the network block; nil when the file has none (see
	// NetworkConfig for the defaults).
	Network *Network `json:"network,omitempty"`
	// CRI is the cri block; nil when the file has none (see CRIConfig
	// for the defaults: keel-cri not run).
	CRI *CRI `json:"cri,omitempty"`
	// MaxConcurrentDownloads bounds the blobs one pull fetches at once.
	MaxConcurrentDownloads int `json:"max_concurrent_downloads"`
	// DefaultSnapshotter names the snapshotter used when a call names none;
	// empty only when no snapshotter is configured.
	DefaultSnapshotter string `json:"default_snapshotter"`
	// Plugins in the order of the file.
	Plugins []Plugin `json:"plugins"`
}

// GRPC is keeld's API endpoint: a unix socket owned by UID:GID.
type GRPC struct {
	Address string `json:"address"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
}

// Metrics is the Prometheus endpoint; an empty Address turns it off.
type Metrics struct {
	Address string `json:"address"`
}

// Plugin is one plugin instance.
type Plugin struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Path is the executable, absolute.
	Path string `json:"path"`
	// SHA256 is the executable's expected digest in lower-case hex, or "".
	SHA256 string `json:"sha256,omitempty"`
	// Env is set in the plugin's environment, over keeld's own: e.g. the Go
	// runtime's GOGC, GOMEMLIMIT or GOMAXPROCS for this plugin.
	Env map[string]string `json:"env,omitempty"`
	// LazyStart: keeld does not start the plugin with itself but on its
	// first call. Never for a runtime, which adopts running tasks.
	LazyStart bool `json:"lazy_start"`
	// IdleStop is how long the plugin may go without a call in flight (a
	// runtime: and without a task) before keeld stops it, gracefully; the
	// next call starts it again. 0: never stopped.
	IdleStop Duration `json:"idle_stop"`
	// Config is the config block as a JSON object ("{}" when absent).
	Config json.RawMessage `json:"config"`
	// Range is the plugin block's header, ConfigRange its config block's
	// (the header's when it has none): where errors about it point.
	Range       hcl.Range `json:"-"`
	ConfigRange hcl.Range `json:"-"`
	// KindRange, PathRange and SHA256Range are where those settings are
	// (the header's when unset); configKeys where each key of the config
	// block is, by its dotted JSON path.
	KindRange   hcl.Range            `json:"-"`
	PathRange   hcl.Range            `json:"-"`
	SHA256Range hcl.Range            `json:"-"`
	configKeys  map[string]hcl.Range `json:"-"`
}

// Instance is "<kind>.<name>", the plugin's name in logs, errors and
// directory names.
func (p *Plugin) Instance() string { return p.Kind + "." + p.Name }

// Root is the plugin's persistent directory under the config's root.
func (p *Plugin) Root(c *Config) string {
	return filepath.Join(c.Root, "plugins", p.Instance())
}

// State is the plugin's runtime directory under the config's state.
func (p *Plugin) State(c *Config) string {
	return filepath.Join(c.State, "plugins", p.Instance())
}

// Plugin returns the instance kind.name, or nil.
func (c *Config) Plugin(kind, name string) *Plugin {
	for i := range c.Plugins {
		if c.Plugins[i].Kind == kind && c.Plugins[i].Name == name {
			return &c.Plugins[i]
		}
	}
	return nil
}

// PluginsOf returns the instances of one kind, in file order.
func (c *Config) PluginsOf(kind string) []*Plugin {
	var out []*Plugin
	for i := range c.Plugins {
		if c.Plugins[i].Kind == kind {
			out = append(out, &c.Plugins[i])
		}
	}
	return out
}

// PluginRange is where the instance kind.name's config block is (its plugin
// block's header when it has none), or the zero Range when there is no
// such instance.
func (c *Config) PluginRange(kind, name string) hcl.Range {
	if p := c.Plugin(kind, name); p != nil {
		return p.ConfigRange
	}
	return hcl.Range{}
}

// PluginError prefixes err, which starting the plugin kind.name or its
// Configure returned, with the position in the file it is about, so the
// operator sees where to look: the setting err names when it names one
// (a SettingError: path, sha256, kind, or a key of the config block),
// else the plugin's config block. err's class is kept.
func (c *Config) PluginError(kind, name string, err error) error {
	p := c.Plugin(kind, name)
	if p == nil {
		return fmt.Errorf("%s.%s: %w", kind, name, err)
	}
	r := p.ConfigRange
	var se SettingError
	if errors.As(err, &se) {
		r = p.settingRange(se.PluginSetting())
	}
	if strings.HasPrefix(err.Error(), p.Instance()+": ") {
		return fmt.Errorf("%s: %w", formatPos(r), err)
	}
	return fmt.Errorf("%s: %s: %w", formatPos(r), p.Instance(), err)
}

// SettingError is an error about one setting of a plugin block: "path",
// "sha256", "kind", or "config" with the dotted path of the key inside the
// config block when known ("" for the block as a whole).
type SettingError interface {
	error
	PluginSetting() (setting, key string)
}

// pathMatches tells whether key names path: the same first and last
// names, and its other names in path in the same order, except names path
// lacks altogether (encoding/json puts an embedded struct's type name in a
// path: "host.Endpoint.plain_http").
func pathMatches(path, key string) bool {
	names, want := strings.Split(path, "."), strings.Split(key, ".")
	if names[len(names)-1] != want[len(want)-1] {
		return false
	}
	if !slices.Contains(names, want[0]) {
		return false
	}
	i := 0
	for _, w := range want {
		if !slices.Contains(names, w) {
			continue
		}
		for i < len(names) && names[i] != w {
			i++
		}
		if i == len(names) {
			return false
		}
		i++
	}
	return true
}

// settingRange is where a setting of p is written.
func (p *Plugin) settingRange(setting, key string) hcl.Range {
	switch setting {
	case "path":
		return p.PathRange
	case "sha256":
		return p.SHA256Range
	case "kind":
		return p.KindRange
	case "config":
		if r, ok := p.configKeys[key]; ok && key != "" {
			return r
		}
		// encoding/json names an unknown key without its path, and a key
		// under a map without the map's keys ("host.plain_http" for
		// host "docker.io" { plain_http = … }): the one key of the block
		// that key names (pathMatches) is the one.
		var found []hcl.Range
		for path, r := range p.configKeys {
			if key != "" && pathMatches(path, key) {
				found = append(found, r)
			}
		}
		if len(found) == 1 {
			return found[0]
		}
	}
	return p.ConfigRange
}

//go:embed default.hcl
var defaultHCL []byte

// Default returns the config keeld runs with when no file is given: the
// overlay and native snapshotters (overlay the default) and the local
// content store beside the keeld executable, and default directories. It
// is an embedded HCL file parsed like any other (default.hcl in this
// package); LoadOrDefault then keeps one snapshotter with
// PickDefaultSnapshotter.
func Default() *Config {
	c, err := Parse(defaultHCL, "default.hcl")
	if err != nil {
		// The file is embedded and tested; this is a build bug.
		panic(fmt.Sprintf("config: embedded default: %v", err))
	}
	return c
}

// DefaultHCL is the embedded default config's file: every key, those at
// their default commented out (keeld config default).
func DefaultHCL() []byte { return slices.Clone(defaultHCL) }

// Load reads and parses the file at path.
func Load(path string) (*Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(src, path)
	if err != nil {
		return nil, err
	}
	c.File = path
	return c, nil
}

// LoadOrDefault loads path; an empty path means DefaultPath when that file
// exists and Default(), its snapshotter picked by PickDefaultSnapshotter,
// when it does not. A path given explicitly must exist.
func LoadOrDefault(path string) (*Config, error) {
	if path != "" {
		return Load(path)
	}
	if _, err := os.Stat(DefaultPath); errors.Is(err, os.ErrNotExist) {
		c := Default()
		PickDefaultSnapshotter(c)
		return c, nil
	}
	return Load(DefaultPath)
}

// checkOverlay reports whether a dir's filesystem can host overlay upper
// dirs; tests replace it.
var checkOverlay = mount.CheckOverlay

// PickDefaultSnapshotter keeps one of the default config's snapshotters:
// overlay when c's root (made if missing) can host overlay upper dirs, as
// the overlay plugin would check at Configure, else native. It returns the
// reason overlay was dropped, or nil. A config without both is left alone.
func PickDefaultSnapshotter(c *Config) error {
	if c.Plugin(sdk.KindSnapshotter, "overlay") == nil || c.Plugin(sdk.KindSnapshotter, "native") == nil {
		return nil
	}
	keep, drop := "overlay", "native"
	err := os.MkdirAll(c.Root, 0o711)
	if err == nil {
		err = checkOverlay(c.Root)
	}
	if err != nil {
		keep, drop = drop, keep
	}
	c.Plugins = slices.DeleteFunc(c.Plugins, func(p Plugin) bool {
		return p.Kind == sdk.KindSnapshotter && p.Name == drop
	})
	c.DefaultSnapshotter = keep
	return err
}

// formatPos writes a range's start as file:line:col.
func formatPos(r hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", r.Filename, r.Start.Line, r.Start.Column)
}

// Error is every problem found in a config file.
type Error struct {
	Diagnostics hcl.Diagnostics
}

// Error is one line per diagnostic: "file:line:col: summary; detail".
func (e *Error) Error() string {
	lines := make([]string, 0, len(e.Diagnostics))
	for _, d := range e.Diagnostics {
		lines = append(lines, formatDiagnostic(d))
	}
	return strings.Join(lines, "\n")
}

// Unwrap classifies every config error as InvalidArgument.
func (e *Error) Unwrap() error { return errdefs.ErrInvalidArgument }

func formatDiagnostic(d *hcl.Diagnostic) string {
	var b strings.Builder
	if d.Subject != nil {
		b.WriteString(formatPos(*d.Subject))
		b.WriteString(": ")
	}
	if d.Severity == hcl.DiagWarning {
		b.WriteString("warning: ")
	}
	b.WriteString(d.Summary)
	if d.Detail != "" {
		b.WriteString("; ")
		// One line per diagnostic, whatever the detail says.
		b.WriteString(strings.Join(strings.Fields(d.Detail), " "))
	}
	return b.String()
}
