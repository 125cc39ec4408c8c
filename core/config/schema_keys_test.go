package config

import (
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2/gohcl"
)

// schemaKeys is every attribute and block name the decoder accepts, in
// the file and in each of its blocks (a plugin's config block is the
// plugin's, not keeld's: its keys are free-form).
func schemaKeys() []string {
	var keys []string
	seen := map[reflect.Type]bool{}
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || seen[t] || t == reflect.TypeOf(configSchema{}) {
			return
		}
		seen[t] = true
		schema, _ := gohcl.ImpliedBodySchema(reflect.New(t).Interface())
		for _, a := range schema.Attributes {
			keys = append(keys, a.Name)
		}
		for _, b := range schema.Blocks {
			keys = append(keys, b.Type)
		}
		for i := range t.NumField() {
			f := t.Field(i)
			if tag := f.Tag.Get("hcl"); strings.HasSuffix(tag, ",block") {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeOf(fileSchema{}))
	return keys
}

// checkEveryKey fails t for each key of the schema that src never writes
// (commented out or not) or writes with no comment on it.
func checkEveryKey(t *testing.T, name string, src []byte) {
	t.Helper()
	lines := strings.Split(string(src), "\n")
	for _, key := range schemaKeys() {
		q := regexp.QuoteMeta(key)
		written := regexp.MustCompile(`^[#\s]*` + q + `\s*(=|\{|")`)
		named := regexp.MustCompile(`^\s*#.*\b` + q + `\b`)
		found, documented := false, false
		for i, l := range lines {
			if named.MatchString(l) {
				documented = true
			}
			if written.MatchString(l) {
				found = true
				// A comment right above the key documents it.
				if i > 0 && strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
					documented = true
				}
			}
		}
		if !found {
			t.Errorf("%s never writes %q", name, key)
		}
		if !documented {
			t.Errorf("%s has no comment on %q", name, key)
		}
	}
}

// TestDefaultHCL: keeld config default writes every key, and parses to the
// embedded default (before keeld picks one of its two snapshotters).
func TestDefaultHCL(t *testing.T) {
	checkEveryKey(t, "default.hcl", DefaultHCL())
	got, err := Parse(DefaultHCL(), "default.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if g, w := mustJSON(t, got), mustJSON(t, Default()); g != w {
		t.Errorf("default.hcl parses to\n%s\nwant\n%s", g, w)
	}
}
