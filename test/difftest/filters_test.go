package difftest_test

import (
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	cfilters "github.com/containerd/containerd/v2/pkg/filters"
	"github.com/containerd/log"

	"github.com/keel-runtime/keel/sdk/filters"
)

// The differential tests run the same filter strings through this package
// and containerd's pkg/filters (a test-only dependency) over the same
// records: both must accept or reject the same strings, and match the same
// records.

// record is a snapshot-like object, adapted the way containerd adapts
// snapshots: name, parent and kind are always present, labels through
// MapField. Both packages' Adaptor interfaces have the one method it has.
type record struct {
	fields map[string]string
	labels map[string]string
}

func (r record) Field(path []string) (string, bool) {
	if len(path) == 0 {
		return "", false
	}
	if path[0] == "labels" {
		return filters.MapField(r.labels, path[1:])
	}
	v, ok := r.fields[path[0]]
	return v, ok
}

var records = []record{
	{fields: map[string]string{"name": "base", "parent": "", "kind": "committed"}},
	{fields: map[string]string{"name": "child", "parent": "base", "kind": "active"},
		labels: map[string]string{"io.keel/gc.root": "2024", "a.b": "dotted", "x": "1"}},
	{fields: map[string]string{"name": "v-1", "parent": "child", "kind": "view"},
		labels: map[string]string{"x": "", "": "nokey", "sp ace": "a b,c", "q": `"quoted"`}},
	{fields: map[string]string{"name": "ünï", "parent": "v-1", "kind": "committed"},
		labels: map[string]string{"x": "2", "u": "héllo/wörld|", "slash": "a/b"}},
	{fields: map[string]string{"name": "", "parent": "", "kind": ""}, labels: map[string]string{}},
}

// differential parses exprs with both packages and compares the outcome
// over every record; it reports whether the strings parsed.
func differential(t *testing.T, exprs []string) bool {
	t.Helper()
	ours, oerr := filters.Parse(exprs...)
	theirs, terr := cfilters.ParseAll(exprs...)
	if (oerr == nil) != (terr == nil) {
		t.Fatalf("%q: keel says %v, containerd says %v", exprs, oerr, terr)
	}
	if oerr != nil {
		return false
	}
	for i, r := range records {
		if o, c := ours.Match(r), theirs.Match(r); o != c {
			t.Fatalf("%q on record %d (%v %v): keel matches %v, containerd %v", exprs, i, r.fields, r.labels, o, c)
		}
	}
	return true
}

// differentialCases are filter strings that probe containerd's grammar at
// its edges; each is also a fuzz seed.
var differentialCases = [][]string{
	nil,
	{""},
	{" "},
	{"", "name==x"},
	{"name==x", ""},
	{"name==x", "bad=="},
	{"", "bad=="},
	{"parent"},
	{`parent==""`},
	{`parent!=""`},
	{"parent!=base"},
	{`labels.x!=""`},
	{"labels.x!=1"},
	{"labels.x"},
	{"labels.nope"},
	{"labels"},
	{`labels==nokey`},
	{`labels."io.keel/gc.root"`},
	{`labels."io.keel/gc.root"==2024`},
	{"labels.a.b==dotted"},
	{`labels."a.b"==dotted`},
	{`labels."a".b==dotted`},
	{`labels.x~=^$`},
	{`labels.x~=.*`},
	{`labels.nope~=^$`},
	{"name~=^ba"},
	{"name~=/^c.*d$/"},
	{"name~=|^v|"},
	{`labels.slash~=/a\/b/`},
	{`labels.u~=|d\|$|`},
	{`labels.u~="wörld"`},
	{"name==/base/"},
	{"name==|base|"},
	{"name~=(["},
	{"name~=[[:alpha:]]+"},
	{"name==base,kind==committed"},
	{"name==base,kind==active"},
	{"name==base", "name==child"},
	{"name==base|name==child"},
	{"name == base"},
	{"name ==base"},
	{"name== base"},
	{" name==base"},
	{"name==base "},
	{"name==base ,kind"},
	{"name==base, kind"},
	{"name "},
	{"name ,kind"},
	{"labels .x"},
	{"labels. x"},
	{"labels.\tx"},
	{"labels..x"},
	{"labels."},
	{".x"},
	{"==x"},
	{"name="},
	{"name=base"},
	{"name===base"},
	{"name=!base"},
	{"name!base"},
	{"name~base"},
	{"name==.base"},
	{"name==a.b"},
	{"name==a=b"},
	{`name==a"b`},
	{"name==a/b|c"},
	{"name==~x"},
	{"name==,x"},
	{"name==x,"},
	{",name"},
	{"name,"},
	{"labels.io-x"},
	{"labels.io/x"},
	{`labels."io-x"`},
	{"0name"},
	{"_x"},
	{"ünï"},
	{"name==ünï"},
	{"name==\u200bx"},
	{"name==x\u200b"},
	{"name==\x01"},
	{"name==x\x01"},
	{"name==\u00a0x"},
	{"name==x\u00a0"},
	{"name==\x00"},
	{"name==\xff"},
	{"name==\ufffd"},
	{`name=="\ufffd"`},
	{`name=="\uD800"`},
	{`name=="\U0010FFFF"`},
	{`name=="\U00110000"`},
	{`name=="\377"`},
	{`name=="\400"`},
	{`name=="\0"`},
	{`name=="\x62ase"`},
	{`name=="\x6"`},
	{`name=="\q"`},
	{`name=="\'"`},
	{`name=="\/"`},
	{`name=~"\/"`},
	{`name~="\/"`},
	{`name~=/\"/`},
	{`name=="a` + "\n" + `"`},
	{`name=="base`},
	{`name=="base"x`},
	{`name=="base",kind`},
	{`name=='base'`},
	{`'name'==base`},
	{`"name"==base`},
	{`/name/==base`},
	{`|name|==base`},
	{`"na\x6de"==base`},
	{`labels."sp ace"=="a b,c"`},
	{`labels."sp ace"==a b`},
	{`labels.q=="\"quoted\""`},
	{`labels.q==\"quoted\"`},
	{`labels.q=="quoted"`},
	{`labels.""==nokey`},
	{`labels.""`},
	{"name\n==base"},
	{"name==\nbase"},
	{"name==base\n"},
}

func TestFilterDifferential(t *testing.T) {
	log.L.Logger.SetOutput(io.Discard) // containerd logs each bad regexp
	for _, exprs := range differentialCases {
		differential(t, exprs)
	}
}

// tokens are the pieces TestFilterDifferentialGenerated strings filters
// from: every kind of token containerd's scanner knows, and its edges.
var tokens = []string{
	"name", "parent", "kind", "labels", "x", "a", "b", "io", "_", "0",
	".", ",", " ", "\t", "\n", "\u00a0",
	"==", "!=", "~=", "=", "!", "~", "===",
	`"`, "/", "|", "'", "\\", `\"`, `\/`, `\|`, `\x41`, `\101`, `\u00e9`, `\q`,
	"base", "child", "1", "", "^", "$", ".*", "(", "[", "é", "\u200b", "\x01",
	`"a.b"`, `"io.keel/gc.root"`, `/^c/`, `|^v|`, `""`,
}

// TestFilterDifferentialGenerated compares the packages on many strings
// stitched together from tokens: random strings seldom parse, these often do.
func TestFilterDifferentialGenerated(t *testing.T) {
	log.L.Logger.SetOutput(io.Discard)
	r := rand.New(rand.NewPCG(9, 9))
	n := 20000
	if testing.Short() {
		n = 2000
	}
	pick := func(xs []string) string { return xs[r.IntN(len(xs))] }
	fields := []string{"name", "parent", "kind", "labels.x", "labels.a.b", `labels."a.b"`, `labels."io.keel/gc.root"`, `labels.""`, "labels", `"name"`, "nope", "labels. x"}
	ops := []string{"==", "!=", "~=", " == ", "== ", " ~="}
	values := []string{"base", "child", `""`, `"base"`, "^c", "/^c/", "|^(v|b)|", `"\x62ase"`, `"\u00e9"`, "a.b", "1", "(", "dotted", `/a\/b/`, "ünï", `"a b,c"`}
	parsed := 0
	for i := range n {
		var b strings.Builder
		if i%2 == 0 {
			// Well-formed selectors, sometimes with a token inserted.
			for j := range 1 + r.IntN(3) {
				if j > 0 {
					b.WriteString(pick([]string{",", ", ", " ,"}))
				}
				b.WriteString(pick(fields))
				if r.IntN(4) > 0 {
					b.WriteString(pick(ops) + pick(values))
				}
			}
			if r.IntN(5) == 0 {
				str := b.String()
				at := r.IntN(len(str) + 1)
				b.Reset()
				b.WriteString(str[:at] + pick(tokens) + str[at:])
			}
		} else {
			for range 1 + r.IntN(9) {
				b.WriteString(pick(tokens))
			}
		}
		exprs := []string{b.String()}
		if r.IntN(4) == 0 {
			exprs = append(exprs, tokens[r.IntN(len(tokens))])
		}
		if differential(t, exprs) {
			parsed++
		}
	}
	t.Logf("%d of %d generated filters parsed", parsed, n)
}

func FuzzFilterDifferential(f *testing.F) {
	log.L.Logger.SetOutput(io.Discard)
	for _, exprs := range differentialCases {
		switch len(exprs) {
		case 0:
			f.Add("", "", false)
		case 1:
			f.Add(exprs[0], "", false)
		default:
			f.Add(exprs[0], exprs[1], true)
		}
	}
	f.Fuzz(func(t *testing.T, a, b string, two bool) {
		exprs := []string{a}
		if two {
			exprs = append(exprs, b)
		}
		differential(t, exprs)
	})
}
