// Package layout enforces DESIGN.md's import arrows between keel's own
// packages: a third party must be able to build a plugin with sdk/ alone,
// and the daemon must never reach into a plugin. The third-party plugins
// kept in the repository to prove the first point (test/thirdparty/<name>,
// each its own module written from the guide) are held to it too.
//
// Only the non-test graph is held to the rules: _test.go files may import
// more (core/metadata's tests run the conformance suite over the native
// plugin's package, for instance).
package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// module is keel's module path; rules speak of paths relative to it. The
// SDK's module is its sdk/ subtree.
const module = "github.com/keel-runtime/keel"

// moduleDirs are keel's own Go modules, from this package's directory.
var moduleDirs = []string{filepath.Join("..", ".."), filepath.Join("..", "..", "sdk")}

// thirdPartyDir holds modules written as a third party writes a plugin,
// relative to the repository's root: test/thirdparty/<name>/go.mod.
const thirdPartyDir = "test/thirdparty"

// rule is one arrow of DESIGN.md: for every package from covers, allowed
// says whether it may import imp (both relative to the module, e.g.
// "sdk/content").
type rule struct {
	name    string
	from    func(pkg string) bool
	allowed func(pkg, imp string) bool
}

// under reports whether pkg is dir or inside it.
func under(pkg, dir string) bool {
	return pkg == dir || strings.HasPrefix(pkg, dir+"/")
}

func underAny(pkg string, dirs ...string) bool {
	return slices.ContainsFunc(dirs, func(d string) bool { return under(pkg, d) })
}

// pluginRoot is "plugins/<name>" for any package of that plugin.
func pluginRoot(pkg string) string {
	parts := strings.SplitN(pkg, "/", 3)
	if len(parts) < 2 {
		return pkg
	}
	return parts[0] + "/" + parts[1]
}

// thirdPartyRoot is "test/thirdparty/<name>" for any package of that module.
func thirdPartyRoot(pkg string) string {
	rest, ok := strings.CutPrefix(pkg, thirdPartyDir+"/")
	if !ok {
		return pkg
	}
	name, _, _ := strings.Cut(rest, "/")
	return thirdPartyDir + "/" + name
}

var rules = []rule{{
	name: "plugins import sdk/ only (and their own packages)",
	from: func(p string) bool { return under(p, "plugins") },
	allowed: func(p, imp string) bool {
		return under(imp, "sdk") || under(imp, pluginRoot(p))
	},
}, {
	name:    "sdk imports nothing of keel outside sdk/",
	from:    func(p string) bool { return under(p, "sdk") },
	allowed: func(_, imp string) bool { return under(imp, "sdk") },
}, {
	name:    "core never imports plugins/, cmd/ or client/",
	from:    func(p string) bool { return under(p, "core") },
	allowed: func(_, imp string) bool { return !underAny(imp, "plugins", "cmd", "client") },
}, {
	name:    "nothing in core imports core/server (cmd/keeld wires it)",
	from:    func(p string) bool { return under(p, "core") && !under(p, "core/server") },
	allowed: func(_, imp string) bool { return !under(imp, "core/server") },
}, {
	name:    "client imports api/ and sdk/ only",
	from:    func(p string) bool { return under(p, "client") },
	allowed: func(_, imp string) bool { return underAny(imp, "api", "sdk", "client") },
}, {
	name:    "api/ imports only the SDK's public wire types (sdk/proto)",
	from:    func(p string) bool { return under(p, "api") },
	allowed: func(_, imp string) bool { return underAny(imp, "api", "sdk/proto") },
}, {
	name:    "test/ is imported only by tests",
	from:    func(p string) bool { return !under(p, "test") },
	allowed: func(_, imp string) bool { return !under(imp, "test") },
}, {
	// keel-plugins is the plugins keel ships in one executable: it is a
	// plugin binary, under the plugins' rules.
	name:    "cmd/keel-plugins imports plugins/ and sdk/ only",
	from:    func(p string) bool { return under(p, "cmd/keel-plugins") },
	allowed: func(_, imp string) bool { return underAny(imp, "plugins", "sdk") },
}, {
	name: "a plugin binary links no host, conformance or fixture code of the SDK",
	from: func(p string) bool { return underAny(p, "plugins", thirdPartyDir, "cmd/keel-plugins") },
	allowed: func(_, imp string) bool {
		return !underAny(imp, "sdk/host", "sdk/conformance", "sdk/fixture")
	},
}, {
	// A third party has the SDK module alone: these modules prove it can be
	// done, so they may not lean on anything else of keel's.
	name: "third-party modules (test/thirdparty/<name>) import sdk/ only (and their own packages)",
	from: func(p string) bool { return under(p, thirdPartyDir) },
	allowed: func(p, imp string) bool {
		return under(imp, "sdk") || under(imp, thirdPartyRoot(p))
	},
}}

// edge is one import of a keel package by another, relative to the module.
type edge struct{ from, to string }

func (e edge) String() string { return e.from + " -> " + e.to }

// violations lists, per rule name, the edges that break it.
func violations(edges []edge) map[string][]edge {
	out := map[string][]edge{}
	for _, r := range rules {
		for _, e := range edges {
			if r.from(e.from) && !r.allowed(e.from, e.to) {
				out[r.name] = append(out[r.name], e)
			}
		}
	}
	return out
}

// listed is what go list -json says of a package, the fields used here.
type listed struct {
	ImportPath string
	Imports    []string
	Error      *struct{ Err string }
}

// thirdPartyModules maps the module path of each third-party module in the
// repository to its directory relative to the root (test/thirdparty/<name>).
// It finds them as the Makefile does, with git ls-files, and fails on a
// go.mod that is neither keel's nor under test/thirdparty/: no rule here
// would know what it may import.
func thirdPartyModules(t *testing.T, goBin string) map[string]string {
	t.Helper()
	root := moduleDirs[0]
	cmd := exec.Command("git", "ls-files", "*go.mod")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	mods := map[string]string{}
	for f := range strings.FieldsSeq(string(out)) {
		dir := filepath.Dir(f)
		switch {
		case dir == "." || dir == "sdk":
			continue
		case filepath.Dir(dir) != thirdPartyDir:
			t.Errorf("module %s: keel's modules are . and sdk; a third-party one goes in %s/<name>", dir, thirdPartyDir)
			continue
		}
		list := exec.Command(goBin, "list", "-m", "-f", "{{.Path}}")
		list.Dir = filepath.Join(root, dir)
		path, err := list.Output()
		if err != nil {
			t.Fatalf("go list -m in %s: %v", dir, err)
		}
		mods[strings.TrimSpace(string(path))] = dir
	}
	return mods
}

// keelEdges lists the non-test imports between keel's packages, and from
// the third-party modules' packages (as test/thirdparty/<name>/...) to
// keel's.
func keelEdges(t *testing.T) []edge {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command: %v", err)
	}
	thirdParty := thirdPartyModules(t, goBin)
	dirs := slices.Clone(moduleDirs)
	for _, dir := range thirdParty {
		dirs = append(dirs, filepath.Join(moduleDirs[0], dir))
	}
	rel := func(path string) (string, bool) {
		for mod, dir := range thirdParty {
			if path == mod {
				return dir, true
			}
			if rest, ok := strings.CutPrefix(path, mod+"/"); ok {
				return dir + "/" + rest, true
			}
		}
		return keelRel(path)
	}
	// -e: a package another helper is mid-way through editing still lists
	// its imports.
	// keel's two modules (keel's and the SDK's, sdk/go.mod, whose packages
	// keel's listing shows only where keel imports them) and the third-party
	// ones.
	var out []byte
	for _, dir := range dirs {
		cmd := exec.Command(goBin, "list", "-e", "-deps", "-json=ImportPath,Imports,Error", "./...")
		cmd.Dir = dir
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		o, err := cmd.Output()
		if err != nil {
			t.Fatalf("go list in %s: %v\n%s", dir, err, stderr.Bytes())
		}
		out = append(out, o...)
	}
	var edges []edge
	seen := map[edge]bool{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		from, ok := rel(p.ImportPath)
		if !ok {
			continue
		}
		if p.Error != nil {
			t.Logf("%s: %s (its imports are checked as listed)", from, p.Error.Err)
		}
		for _, imp := range p.Imports {
			if to, ok := rel(imp); ok && !seen[edge{from, to}] {
				seen[edge{from, to}] = true
				edges = append(edges, edge{from, to})
			}
		}
	}
	if len(edges) == 0 {
		t.Fatal("go list found no imports between keel packages")
	}
	for _, dir := range thirdParty {
		if !slices.ContainsFunc(edges, func(e edge) bool { return under(e.from, dir) }) {
			t.Errorf("go list found no imports of keel packages from %s", dir)
		}
	}
	return edges
}

// keelRel is path relative to the module, when it is a keel package.
func keelRel(path string) (string, bool) {
	if path == module {
		return ".", true
	}
	return strings.CutPrefix(path, module+"/")
}

// TestImportArrows holds the real import graph to the rules.
func TestImportArrows(t *testing.T) {
	edges := keelEdges(t)
	bad := violations(edges)
	for _, r := range rules {
		if es := bad[r.name]; len(es) > 0 {
			var b strings.Builder
			for _, e := range es {
				fmt.Fprintf(&b, "\n\t%s", e)
			}
			t.Errorf("rule %q broken by:%s", r.name, b.String())
		}
	}
}

// TestRules shows each rule catches what it is meant to and lets through
// what DESIGN.md allows, on a made-up graph.
func TestRules(t *testing.T) {
	tests := []struct {
		edge edge
		rule string // "" when the edge is allowed
	}{
		{edge{"plugins/snapshotter-native", "plugins/snapshotter-native/native"}, ""},
		{edge{"plugins/snapshotter-native/native", "sdk/snapshot/storage"}, ""},
		{edge{"plugins/snapshotter-native/native", "core/metadata"}, rules[0].name},
		{edge{"plugins/snapshotter-native/native", "plugins/content-local/local"}, rules[0].name},
		{edge{"plugins/content-local/local", "api/keel/v1"}, rules[0].name},
		{edge{"sdk/content", "sdk/errdefs"}, ""},
		{edge{"sdk/content", "api/keel/v1"}, rules[1].name},
		{edge{"sdk", "version"}, rules[1].name},
		{edge{"core/server", "core/metadata"}, ""},
		{edge{"core/server", "api/keel/v1"}, ""},
		{edge{"core/metadata", "plugins/snapshotter-native/native"}, rules[2].name},
		{edge{"core/server", "client"}, rules[2].name},
		{edge{"core/gc", "core/server"}, rules[3].name},
		{edge{"client", "sdk/errdefs"}, ""},
		{edge{"client", "api/keel/v1"}, ""},
		{edge{"client", "core/config"}, rules[4].name},
		{edge{"api/keel/v1", "sdk/proto/keel/types/v1"}, ""},
		{edge{"api/keel/v1", "sdk/errdefs"}, rules[5].name},
		{edge{"test/e2e", "test/realimage"}, ""},
		{edge{"cmd/keel", "sdk/conformance/runner"}, ""},
		{edge{"cmd/keel", "test/realimage"}, rules[6].name},
		{edge{"core/metadata", "test/realimage"}, rules[6].name},
		{edge{"sdk/conformance/snapshottest", "sdk/snapshot"}, ""},
		{edge{"sdk/conformance/snapshottest", "core/metadata"}, rules[1].name},
		{edge{"plugins/snapshotter-native/native", "sdk/snapshot/backend"}, ""},
		{edge{"plugins/snapshotter-native/native", "sdk/host"}, rules[8].name},
		{edge{"plugins/runtime-runc/runc", "sdk/fixture"}, rules[8].name},
		{edge{"test/thirdparty/snapshotter-layered", "sdk/snapshot/backend"}, ""},
		{edge{"test/thirdparty/snapshotter-layered", "test/thirdparty/snapshotter-layered/store"}, ""},
		{edge{"test/thirdparty/snapshotter-layered", "test/thirdparty/other"}, rules[9].name},
		{edge{"test/thirdparty/snapshotter-layered", "core/metadata"}, rules[9].name},
		{edge{"test/thirdparty/snapshotter-layered", "test/fstree"}, rules[9].name},
		{edge{"test/thirdparty/snapshotter-layered", "sdk/conformance/snapshottest"}, rules[8].name},
		{edge{"cmd/keel-plugins", "plugins/content-local/local"}, ""},
		{edge{"cmd/keel-plugins", "sdk"}, ""},
		{edge{"cmd/keel-plugins", "core/config"}, rules[7].name},
		{edge{"cmd/keel-plugins", "version"}, rules[7].name},
		{edge{"cmd/keel-plugins", "sdk/host"}, rules[8].name},
	}
	for _, tt := range tests {
		t.Run(tt.edge.String(), func(t *testing.T) {
			bad := violations([]edge{tt.edge})
			var broken []string
			for name := range bad {
				broken = append(broken, name)
			}
			switch {
			case tt.rule == "" && len(broken) > 0:
				t.Errorf("allowed edge flagged by %q", broken)
			case tt.rule != "" && !slices.Contains(broken, tt.rule):
				t.Errorf("not flagged by %q (flagged by %q)", tt.rule, broken)
			}
		})
	}
}

// TestNoContainerdInBinaries holds containerd itself (the reference that
// test/difftest diffs keel's layer applier against) to the tests: no
// binary keel builds may link it.
func TestNoContainerdInBinaries(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-e", "-deps", "-f", "{{.ImportPath}}", "./cmd/...", "./plugins/...")
	cmd.Dir = filepath.Join("..", "..")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	for p := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(p, "github.com/containerd/containerd/") {
			t.Errorf("a binary links %s", p)
		}
	}
}

// TestSuitesLinkOnlyTheirFixtures holds each conformance suite to the
// third-party code its kind needs: a snapshotter author's test must not
// link the registry fixture's JWT and bcrypt, or the runtime suite's
// cgroups.
func TestSuitesLinkOnlyTheirFixtures(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command: %v", err)
	}
	registryDeps := []string{"github.com/golang-jwt/jwt", "golang.org/x/crypto/bcrypt"}
	cgroups := []string{"github.com/containerd/cgroups"}
	tests := []struct {
		pkg       string
		forbidden []string
	}{
		{"./conformance/snapshottest", append(registryDeps, cgroups...)},
		{"./conformance/contenttest", append(registryDeps, cgroups...)},
		{"./conformance/resolvertest", cgroups},
		{"./conformance/runtimetest", registryDeps},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			cmd := exec.Command(goBin, "list", "-deps", "-f", "{{.ImportPath}}", tt.pkg)
			cmd.Dir = moduleDirs[1]
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
			}
			for p := range strings.SplitSeq(string(out), "\n") {
				for _, f := range tt.forbidden {
					if under(p, f) {
						t.Errorf("%s links %s", tt.pkg, p)
					}
				}
			}
		})
	}
}

// TestSDKLeavesOutContinuity holds the SDK module, tests included, to
// code of its own for what only one helper needed: backend.DirUsage walks
// a tree itself and the snapshotter suite copies with cp -a, so a plugin
// author's go.mod gets no containerd/continuity, and with it no
// containerd/log or logrus. A plugin that copies trees (native) imports
// continuity itself.
func TestSDKLeavesOutContinuity(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go command: %v", err)
	}
	cmd := exec.Command(goBin, "list", "-deps", "-test", "-f", "{{.ImportPath}}", "./...")
	cmd.Dir = moduleDirs[1]
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	for p := range strings.SplitSeq(string(out), "\n") {
		if underAny(p, "github.com/containerd/continuity", "github.com/containerd/log", "github.com/sirupsen/logrus") {
			t.Errorf("the sdk module links %s", p)
		}
	}
}
