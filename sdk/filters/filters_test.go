package filters

import (
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// obj is a flat map of dotted field paths, enough to drive every condition.
type obj map[string]string

func (o obj) Field(path []string) (string, bool) {
	key := ""
	for i, p := range path {
		if i > 0 {
			key += "\x00"
		}
		key += p
	}
	v, ok := o[key]
	return v, ok
}

var blob = obj{
	"digest":                   "sha256:abcd",
	"size":                     "42",
	"labels\x00io.keel/x":      "v",
	"labels\x00plain":          "a b,c",
	"labels\x00empty":          "",
	"labels\x00with.dots\x00x": "deep",
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		exprs []string
		want  bool
	}{
		{"NoExprs", nil, true},
		{"EmptyExpr", []string{""}, true},
		{"BlankExpr", []string{"  "}, true},
		{"Equal", []string{"size==42"}, true},
		{"EqualMiss", []string{"size==43"}, false},
		{"NotEqual", []string{"size!=43"}, true},
		{"NotEqualSame", []string{"size!=42"}, false},
		{"NotEqualAbsent", []string{"nope!=1"}, true},
		{"Present", []string{"digest"}, true},
		{"PresentEmptyValue", []string{"labels.empty"}, true},
		{"Absent", []string{"labels.nope"}, false},
		{"QuotedSegment", []string{`labels."io.keel/x"==v`}, true},
		{"QuotedValue", []string{`labels.plain=="a b,c"`}, true},
		{"QuotedEscapes", []string{`labels."io.keel/x"=="\x76"`}, true},
		{"BareValueWithPunctuation", []string{"digest==sha256:abcd"}, true},
		{"Regexp", []string{"digest~=^sha256:ab"}, true},
		{"RegexpMiss", []string{"digest~=^sha512:"}, false},
		{"RegexpSlashes", []string{`digest~=/^sha256:a\/?b/`}, true},
		{"RegexpQuoted", []string{`digest~="c.$"`}, true},
		{"RegexpAbsent", []string{"nope~=.*"}, false},
		{"AndAll", []string{"size==42,digest~=abcd,labels.plain"}, true},
		{"AndOneFails", []string{"size==42,digest==x"}, false},
		{"OrOneHolds", []string{"size==1", "labels.empty"}, true},
		{"OrNoneHolds", []string{"size==1", "size==2"}, false},
		{"OrSkipsEmpty", []string{"", "size==2"}, false},
		{"Spaces", []string{" size == 42 , digest "}, true},
		{"DeepPath", []string{`labels."with.dots".x==deep`}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse(tc.exprs...)
			if err != nil {
				t.Fatalf("parse %q: %v", tc.exprs, err)
			}
			if got := f.Match(blob); got != tc.want {
				t.Errorf("match %q = %v, want %v", tc.exprs, got, tc.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct{ name, expr string }{
		{"NoField", "==x"},
		{"NoValue", "size=="},
		{"BadOperator", "size=x"},
		{"SingleEquals", "size = 1"},
		{"TrailingComma", "size==1,"},
		{"LeadingComma", ",size"},
		{"EmptySegment", "labels..x"},
		{"TrailingDot", "labels."},
		{"UnterminatedQuote", `labels."x==1`},
		{"UnterminatedValue", `size=="1`},
		{"UnterminatedRegexp", `digest~=/abc`},
		{"BadRegexp", "digest~=(["},
		{"Garbage", "size==1 x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("size", tc.expr)
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("parse %q: got %v, want invalid argument", tc.expr, err)
			}
			if want := `filter "`; len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
				t.Errorf("error %q does not name the expression", err)
			}
		})
	}
}

func TestAdaptorFunc(t *testing.T) {
	f, err := Parse("a.b==c")
	if err != nil {
		t.Fatal(err)
	}
	a := AdaptorFunc(func(path []string) (string, bool) {
		return "c", len(path) == 2 && path[0] == "a" && path[1] == "b"
	})
	if !f.Match(a) || !Match(nil, a) || !Always.Match(a) {
		t.Fatal("adaptor func did not match")
	}
}
