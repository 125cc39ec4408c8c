// Package docs tests the documentation: the guide's code is the example's
// code, byte for byte, and every HCL block parses as keeld's config.
package docs

import (
	"bufio"
	"bytes"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/core/config"
)

// block is one fenced code block of a markdown file.
type block struct {
	lang string
	line int // of the opening fence
	text string
}

// fenced returns the fenced code blocks of the markdown file at path.
func fenced(t *testing.T, path string) []block {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		blocks []block
		cur    *block
		body   strings.Builder
	)
	sc := bufio.NewScanner(bytes.NewReader(src))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &block{lang: strings.TrimSpace(strings.TrimPrefix(line, "```")), line: n}
			body.Reset()
		case cur != nil && strings.TrimSpace(line) == "```":
			cur.text = body.String()
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			body.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("%s:%d: code block never closed", path, cur.line)
	}
	return blocks
}

// exampleDir holds the guide's plugin: its .go files are the guide's code.
var exampleDir = filepath.Join("example", "snapshotter")

// exampleFiles returns the example's .go files, by name.
func exampleFiles(t *testing.T) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(exampleDir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = b
	}
	if files["main.go"] == nil {
		t.Fatalf("%s has no main.go", exampleDir)
	}
	return files
}

// TestGuideCodeIsTheExample: each ```go block of the guide is one of the
// example's files verbatim, and every file of the example is shown, so
// the guide holds the whole plugin and its test, and both compile and
// pass (the example's own go test runs the conformance suite).
func TestGuideCodeIsTheExample(t *testing.T) {
	const guide = "writing-a-plugin.md"
	byText := map[string]string{}
	for name, b := range exampleFiles(t) {
		byText[string(b)] = name
	}
	shown := map[string]bool{}
	for _, b := range fenced(t, guide) {
		if b.lang != "go" {
			continue
		}
		name, ok := byText[b.text]
		if !ok {
			t.Errorf("%s:%d: go block is none of %s's files; paste the file verbatim", guide, b.line, exampleDir)
			continue
		}
		shown[name] = true
	}
	for _, name := range byText {
		if !shown[name] {
			t.Errorf("%s does not show %s", guide, filepath.Join(exampleDir, name))
		}
	}
}

// TestExampleIsSmallAndImportsSDK: the example stays a small plugin a third
// party could write, importing nothing of keel but sdk/.
func TestExampleIsSmallAndImportsSDK(t *testing.T) {
	const maxLines = 120 // the plugin, its test aside
	lines := 0
	for name, src := range exampleFiles(t) {
		path := filepath.Join(exampleDir, name)
		if !strings.HasSuffix(name, "_test.go") {
			lines += bytes.Count(src, []byte("\n"))
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		const module = "github.com/keel-runtime/keel/"
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, module) && !strings.HasPrefix(p, module+"sdk") {
				t.Errorf("%s imports %s: a plugin imports keel's sdk/ only", path, p)
			}
		}
	}
	if lines >= maxLines {
		t.Errorf("%s's plugin has %d lines; the example promises under %d", exampleDir, lines, maxLines)
	}
}

// TestHCLBlocksParse: every ```hcl block in docs/*.md, README.md and the
// plugins' READMEs is valid keeld config. A block naming no content plugin
// gets one added, as keeld needs one.
func TestHCLBlocksParse(t *testing.T) {
	var mds []string
	for _, pattern := range []string{"*.md", "../README.md", "../plugins/*/README.md"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		mds = append(mds, m...)
	}
	n := 0
	for _, md := range mds {
		for _, b := range fenced(t, md) {
			if b.lang != "hcl" {
				continue
			}
			n++
			// Blank lines up to the fence, so positions in errors are the
			// markdown file's own.
			src := strings.Repeat("\n", b.line) + b.text
			if !strings.Contains(src, `plugin "content"`) {
				src += "\nplugin \"content\" \"local\" {\n  path = \"keel-content-local\"\n}\n"
			}
			if _, err := config.Parse([]byte(src), md); err != nil {
				t.Errorf("%s:%d: hcl block does not parse as keeld config: %v\n%s", md, b.line, err, b.text)
			}
		}
	}
	if n == 0 {
		t.Error("no ```hcl blocks found in docs/*.md")
	}
}
