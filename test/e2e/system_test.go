package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/client"
)

// TestPluginsAndVersion: keeld runs both plugins and says so, in a table and
// in JSON.
func TestPluginsAndVersion(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)

	plugins := k.plugins()
	for _, id := range []string{"snapshotter.native", "content.local"} {
		p, ok := plugins[id]
		if !ok {
			t.Fatalf("plugins ls: %s missing: %+v", id, plugins)
		}
		if p.State != "running" || p.Pid <= 0 || p.Restarts != 0 {
			t.Errorf("%s: state %q pid %d restarts %d, want running, a pid, 0", id, p.State, p.Pid, p.Restarts)
		}
		if !alive(p.Pid) {
			t.Errorf("%s: pid %d is not a live process", id, p.Pid)
		}
	}
	if len(plugins) != 2 {
		t.Errorf("plugins ls: %d plugins, want 2: %+v", len(plugins), plugins)
	}

	// The table: a header, then one row per plugin with its pid and state.
	lines := strings.Split(strings.TrimSpace(k.ok("plugins", "ls")), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "KIND") {
		t.Fatalf("plugins ls table:\n%s", strings.Join(lines, "\n"))
	}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		p, ok := plugins[f[0]+"."+f[1]]
		if !ok || len(f) < 6 || f[3] != strconv.Itoa(p.Pid) || f[4] != "running" || f[5] != "0" {
			t.Errorf("plugins ls row %q does not match %+v", line, p)
		}
	}
	if got := strings.Fields(k.ok("plugins", "ls", "-q")); len(got) != 2 {
		t.Errorf("plugins ls -q: %q", got)
	}

	var v struct {
		Client map[string]string `json:"client"`
		Server map[string]string `json:"server"`
	}
	k.okJSON(&v, "version")
	if v.Server["version"] == "" || v.Server["version"] != v.Client["version"] {
		t.Errorf("version: client %v, server %v: want the same non-empty version", v.Client, v.Server)
	}
	if out := k.ok("version"); !strings.Contains(out, "Server:") {
		t.Errorf("version table:\n%s", out)
	}
}

// TestNamespaces: create, label, list and remove namespaces; a namespace
// that holds something cannot be removed.
func TestNamespaces(t *testing.T) {
	t.Parallel()
	k := newEnv(t).start(t)

	list := func() map[string]client.Namespace {
		t.Helper()
		var nss []client.Namespace
		k.okJSON(&nss, "namespace", "ls")
		out := map[string]client.Namespace{}
		for _, ns := range nss {
			out[ns.Name] = ns
		}
		return out
	}

	k.ok("namespace", "create", "team-a", "owner=alice", "tier=gold")
	k.ok("namespace", "create", "team-b")
	if r := k.keel("namespace", "create", "team-a"); r.code == 0 {
		t.Errorf("second create of team-a succeeded: %v", r)
	} else if msg := oneLineError(t, r); !strings.Contains(msg, "team-a") {
		t.Errorf("create of an existing namespace: %q does not name it", msg)
	}

	out := k.ok("namespace", "label", "team-a", "tier=", "env=prod")
	if !strings.Contains(out, "env=prod,owner=alice") || strings.Contains(out, "tier") {
		t.Errorf("namespace label printed:\n%s", out)
	}
	nss := list()
	if got := nss["team-a"].Labels; len(got) != 2 || got["owner"] != "alice" || got["env"] != "prod" {
		t.Errorf("team-a labels %v, want owner=alice env=prod", got)
	}
	if _, ok := nss["team-b"]; !ok {
		t.Errorf("team-b missing from %v", nss)
	}
	if got := strings.Fields(k.ok("ns", "ls", "-q")); !contains(got, "team-a") || !contains(got, "team-b") {
		t.Errorf("ns ls -q: %q", got)
	}

	// team-a gets a blob, so it cannot be removed; team-b goes.
	if r := k.keelIn(strings.NewReader("hello"), "-n", "team-a", "content", "ingest", "r"); r.code != 0 {
		t.Fatal(r)
	}
	r := k.keel("namespace", "rm", "team-a")
	msg := oneLineError(t, r)
	if !strings.Contains(msg, `"team-a"`) || !strings.Contains(msg, "failed precondition") {
		t.Errorf("rm of a non-empty namespace: %q, want it to name team-a and the failed precondition", msg)
	}
	k.ok("namespace", "rm", "team-b")
	nss = list()
	if _, ok := nss["team-b"]; ok {
		t.Errorf("team-b still listed after rm: %v", nss)
	}
	if _, ok := nss["team-a"]; !ok {
		t.Errorf("team-a gone after a failed rm: %v", nss)
	}

	// Emptied, team-a goes too.
	k.ok(append([]string{"-n", "team-a", "content", "rm"}, strings.Fields(k.ok("-n", "team-a", "content", "ls", "-q"))...)...)
	k.ok("namespace", "rm", "team-a")
	if nss := list(); len(nss) != 0 {
		t.Errorf("namespaces left: %v", nss)
	}
	if r := k.keel("namespace", "rm", "nosuch"); r.code != 1 || !strings.Contains(oneLineError(t, r), "not found") {
		t.Errorf("rm of a missing namespace: %v", r)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
