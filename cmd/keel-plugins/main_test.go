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

// Every plugin under plugins/ is in keel-plugins, and the Makefile links
// each of them: a plugin added without both would be missing from bin/.
func TestEveryPluginDispatched(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("..", "..", "plugins"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, "keel-"+e.Name())
		}
	}
	names := slices.Sorted(maps.Keys(plugins))
	if !slices.Equal(dirs, names) {
		t.Errorf("plugins/ holds %v, keel-plugins dispatches %v", dirs, names)
	}
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^PLUGINS\s*:=\s*(.*)$`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("no PLUGINS := line in the Makefile")
	}
	linked := strings.Fields(string(m[1]))
	slices.Sort(linked)
	if !slices.Equal(linked, names) {
		t.Errorf("the Makefile links %v, keel-plugins dispatches %v", linked, names)
	}
}
