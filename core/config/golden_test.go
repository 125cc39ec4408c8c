package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the expected output of testdata/*.hcltest")

// separator splits a golden case into its HCL input and the expected
// output: the normalized JSON of the Config, or the error's lines.
const separator = "----------\n"

// testExecutable pins the keeld executable, so relative plugin paths
// resolve the same on every machine.
const testExecutable = "/opt/keel/bin/keeld"

func TestMain(m *testing.M) {
	executable = func() (string, error) { return testExecutable, nil }
	os.Exit(m.Run())
}

// TestGolden runs every testdata/*.hcltest case (Caddy's adapt tests):
// go test ./core/config -run Golden -update rewrites their expectations.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.hcltest")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden cases in testdata")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".hcltest")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, want, ok := bytes.Cut(data, []byte("\n"+separator))
			if !ok {
				t.Fatalf("%s: no %q line", file, strings.TrimSpace(separator))
			}
			input = append(input, '\n')
			got := render(t, input, filepath.Base(file))
			if *update {
				out := append(append(input, separator...), got...)
				if err := os.WriteFile(file, out, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != string(want) {
				t.Errorf("%s: got\n%s\nwant\n%s", file, got, want)
			}
		})
	}
}

// render is a case's output: the config as indented JSON, or the error.
func render(t *testing.T, input []byte, filename string) string {
	t.Helper()
	c, err := Parse(input, filename)
	if err != nil {
		if _, ok := err.(*Error); !ok {
			t.Fatalf("error is a %T, want *Error: %v", err, err)
		}
		return err.Error() + "\n"
	}
	out, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(out) + "\n"
}
