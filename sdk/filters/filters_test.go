package filters

import (
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// obj exposes top-level fields and labels the way keel's adaptors do.
type obj struct {
	fields map[string]string
	labels map[string]string
}

func (o obj) Field(path []string) (string, bool) {
	if len(path) > 0 && path[0] == "labels" {
		return MapField(o.labels, path[1:])
	}
	v, ok := o.fields[path[0]]
	return v, ok
}

var blob = obj{
	fields: map[string]string{"digest": "sha256:abcd", "size": "42", "parent": ""},
	labels: map[string]string{"io.keel/x": "v", "plain": "a b,c", "empty": "", "with.dots.x": "deep"},
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		exprs []string
		want  bool
	}{
		{"NoExprs", nil, true},
		{"EmptyExpr", []string{""}, true},
		{"EmptyExprOrsEverything", []string{"", "size==2"}, true},
		{"Equal", []string{"size==42"}, true},
		{"EqualMiss", []string{"size==43"}, false},
		{"EqualEmptyPresent", []string{`parent==""`}, true},
		{"EqualEmptyAbsent", []string{`nope==""`}, false},
		{"NotEqual", []string{"size!=43"}, true},
		{"NotEqualSame", []string{"size!=42"}, false},
		{"NotEqualAbsent", []string{"nope!=1"}, true},
		{"NotEmptyAbsent", []string{`nope!=""`}, false},
		{"NotEmptyEmpty", []string{`parent!=""`}, false},
		{"NotEmptyLabelUnset", []string{`labels.nope!=""`}, false},
		{"NotEmptyLabelEmpty", []string{`labels.empty!=""`}, false},
		{"NotEmptyLabelSet", []string{`labels.plain!=""`}, true},
		{"Present", []string{"digest"}, true},
		{"PresentEmptyValue", []string{"labels.empty"}, true},
		{"Absent", []string{"labels.nope"}, false},
		{"QuotedSegment", []string{`labels."io.keel/x"==v`}, true},
		{"QuotedValue", []string{`labels.plain=="a b,c"`}, true},
		{"QuotedEscapes", []string{`labels."io.keel/x"=="\x76"`}, true},
		{"BareValueWithPunctuation", []string{"digest==sha256:abcd"}, true},
		{"BareValueWithQuote", []string{`digest==sha256:"abcd`}, false},
		{"Regexp", []string{"digest~=^sha256:ab"}, true},
		{"RegexpMiss", []string{"digest~=^sha512:"}, false},
		{"RegexpSlashes", []string{`digest~=/^sha256:a\/?b/`}, true},
		{"RegexpPipes", []string{`digest~=|^sha256:(x\|a)|`}, true},
		{"RegexpQuoted", []string{`digest~="c.$"`}, true},
		{"RegexpAbsentIsEmpty", []string{"nope~=^$"}, true},
		{"RegexpBadMatchesNothing", []string{"digest~=(["}, false},
		{"AndAll", []string{"size==42,digest~=abcd,labels.plain"}, true},
		{"AndOneFails", []string{"size==42,digest==x"}, false},
		{"OrOneHolds", []string{"size==1", "labels.empty"}, true},
		{"OrNoneHolds", []string{"size==1", "size==2"}, false},
		{"SpacesBeforeTokens", []string{" size == 42, digest"}, true},
		{"DottedLabel", []string{`labels.with.dots.x==deep`}, true},
		{"DottedLabelQuoted", []string{`labels."with.dots".x==deep`}, true},
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
		{"LongOperator", "size===x"},
		{"SingleEquals", "size = 1"},
		{"TrailingComma", "size==1,"},
		{"LeadingComma", ",size"},
		{"EmptySegment", "labels..x"},
		{"TrailingDot", "labels."},
		{"DashInField", "labels.io-x"},
		{"SingleQuotedField", "'size'==1"},
		{"SlashQuotedField", "/size/==1"},
		{"SlashQuotedEqualValue", "size==/1/"},
		{"ValueStartsWithDot", "size==.1"},
		{"UnterminatedQuote", `labels."x==1`},
		{"UnterminatedValue", `size=="1`},
		{"NewlineInQuote", "size==\"1\n\""},
		{"BadEscape", `size=="\q"`},
		{"OctalOutOfRange", `size=="\400"`},
		{"UnterminatedRegexp", `digest~=/abc`},
		{"Blank", " "},
		{"TrailingSpace", "size==1 "},
		{"SpaceBeforeComma", "size ,digest"},
		{"Garbage", "size==1 x"},
		{"NotUTF8", "size==\xff"},
		{"NUL", "size==\x00"},
		{"TooLong", "size==" + strings.Repeat("1", MaxExprLength)},
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

func TestParseTooMany(t *testing.T) {
	exprs := make([]string, MaxExprs+1)
	for i := range exprs {
		exprs[i] = "size==1"
	}
	if _, err := Parse(exprs...); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("%d filters: %v, want invalid argument", len(exprs), err)
	}
	if _, err := Parse(exprs[:MaxExprs]...); err != nil {
		t.Fatal(err)
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
