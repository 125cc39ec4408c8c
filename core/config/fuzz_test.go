package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// FuzzParse: Parse never panics; it returns a config or an *Error
// (InvalidArgument) whose every line starts with file:line:col of the
// file it was given; and it gives the same answer twice. Seeds: the
// golden cases' inputs, the example and the default config; testdata/fuzz
// holds more.
func FuzzParse(f *testing.F) {
	cases, err := filepath.Glob("testdata/*.hcltest")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range append(cases, "../../config.hcl.example", "default.hcl") {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		input, _, _ := bytes.Cut(data, []byte("\n"+separator))
		f.Add(input)
	}
	const filename = "keeld.hcl"
	pos := regexp.MustCompile(`^` + regexp.QuoteMeta(filename) + `:[1-9][0-9]*:[1-9][0-9]*: \S`)
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Parse(src, filename)
		var cerr *Error
		switch {
		case err == nil && c == nil:
			t.Fatal("no config and no error")
		case err != nil && !errors.As(err, &cerr):
			t.Fatalf("error is a %T: %v", err, err)
		case err != nil && !errdefs.IsInvalidArgument(err):
			t.Fatalf("error is not InvalidArgument: %v", err)
		case err != nil:
			for _, line := range strings.Split(err.Error(), "\n") {
				if !pos.MatchString(line) {
					t.Fatalf("error line without file:line:col: %q", line)
				}
			}
		}
		c2, err2 := Parse(src, filename)
		if a, b := render2(c, err), render2(c2, err2); a != b {
			t.Fatalf("two parses differ:\n%s\n%s", a, b)
		}
	})
}

// render2 is a parse's result as text, to compare two.
func render2(c *Config, err error) string {
	if err != nil {
		return err.Error()
	}
	b, merr := json.Marshal(c)
	if merr != nil {
		return "marshal: " + merr.Error()
	}
	return string(b)
}
