package main

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// Every plugin under plugins/ is in keel-plugins and linked by the
// Makefile, and every command under cmd/ is built by it: one added
// without either would be missing from bin/.
func TestEveryPluginDispatched(t *testing.T) {
	dirs := func(parent, prefix string) []string {
		entries, err := os.ReadDir(filepath.Join("..", "..", parent))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			if e.IsDir() {
				names = append(names, prefix+e.Name())
			}
		}
		return names
	}
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	list := func(name string) []string {
		m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(.*)$`).FindSubmatch(mk)
		if m == nil {
			t.Fatalf("no %s := line in the Makefile", name)
		}
		return slices.Sorted(slices.Values(strings.Fields(string(m[1]))))
	}
	names := slices.Sorted(maps.Keys(plugins))
	if linked := list("PLUGINS"); !slices.Equal(linked, names) {
		t.Errorf("the Makefile links %v, keel-plugins dispatches %v", linked, names)
	}
	if plugins := dirs("plugins", "keel-"); !slices.Equal(plugins, names) {
		t.Errorf("plugins/ holds %v; keel-plugins dispatches %v", plugins, names)
	}
	built := list("BINARIES")
	for _, cmd := range dirs("cmd", "") {
		if !slices.Contains(built, cmd) {
			t.Errorf("cmd/%s is not in the Makefile's BINARIES %v", cmd, built)
		}
	}
}
