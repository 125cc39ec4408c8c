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
// Makefile, or built alone by it (ALONE): a plugin added without either
// would be missing from bin/.
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
	mk, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	list := func(name string) []string {
		m := regexp.MustCompile(`(?m)^` + name + `\s*:=\s*(.*)$`).FindSubmatch(mk)
		if m == nil {
			t.Fatalf("no %s := line in the Makefile", name)
		}
		return strings.Fields(string(m[1]))
	}
	linked, alone := list("PLUGINS"), list("ALONE")
	slices.Sort(linked)
	if !slices.Equal(linked, names) {
		t.Errorf("the Makefile links %v, keel-plugins dispatches %v", linked, names)
	}
	all := slices.Sorted(slices.Values(append(names, alone...)))
	if !slices.Equal(dirs, all) {
		t.Errorf("plugins/ holds %v; keel-plugins dispatches %v and the Makefile builds %v alone", dirs, names, alone)
	}
}
