// Package filters parses and applies containerd's filter syntax, used by
// every Walk and List call that takes filters. It accepts exactly the
// strings containerd's pkg/filters accepts and matches exactly what it
// matches (a differential test holds it to that).
//
// Parse takes a list of filter strings; an object matches when ANY of them
// matches. No strings match everything, and so does an empty string among
// them. A filter string is a comma-separated list of selectors, all of
// which must hold:
//
//	field==value   the field is present and equals value
//	field!=value   the field's value differs from value (an absent field's
//	               value is "": labels.x!="" is false where x is unset)
//	field~=regexp  the field's value matches the regular expression (an
//	               absent field's value is ""); a regexp that does not
//	               compile matches nothing
//	field          the field is present
//
// A field is a dotted path of names made of [A-Za-z0-9_]; a segment with
// other characters is double-quoted: labels."io.keel/gc.root". A value is
// a double-quoted Go string or a bare word: its first character is not
// whitespace, a quote ('"', '/', '|'), ',', '.', '=', '!' or '~', and the
// rest are printable characters other than whitespace and ','. After ~= a
// value may also be quoted with /slashes/ or |pipes| (\/ or \| escapes the
// delimiter). Whitespace may come before a field, an operator or a value,
// never before ',' or '.', nor at the end. '|' is not "or": or-ing takes
// separate filter strings.
//
//	Parse(`labels."io.keel/x"==v,name`, `name~=^base-`)
package filters

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Adaptor exposes an object's fields to a Filter. Field returns the value at
// path and whether the field is present; an absent field's value must be "",
// since != and ~= compare the value whether present or not.
type Adaptor interface {
	Field(path []string) (value string, present bool)
}

// AdaptorFunc lets a function be an Adaptor.
type AdaptorFunc func(path []string) (string, bool)

// Field calls f.
func (f AdaptorFunc) Field(path []string) (string, bool) { return f(path) }

// MapField is the field path of a label map (the path after "labels."): its
// segments joined with dots name the key, so labels.a.b and labels."a.b" are
// the same label. An empty map has no fields.
func MapField(m map[string]string, path []string) (string, bool) {
	if len(m) == 0 {
		return "", false
	}
	v, ok := m[strings.Join(path, ".")]
	return v, ok
}

// Filter decides whether an object matches.
type Filter interface {
	Match(Adaptor) bool
}

// Always matches everything.
var Always Filter = always{}

type always struct{}

func (always) Match(Adaptor) bool { return true }

type operator int

const (
	opPresent operator = iota
	opEqual
	opNotEqual
	opMatch
)

type selector struct {
	path  []string
	op    operator
	value string
	re    *regexp.Regexp // nil after ~= when value does not compile
}

func (c selector) match(a Adaptor) bool {
	v, ok := a.Field(c.path)
	switch c.op {
	case opPresent:
		return ok
	case opEqual:
		return ok && v == c.value
	case opNotEqual:
		return v != c.value
	case opMatch:
		return c.re != nil && c.re.MatchString(v)
	}
	return false
}

// allOf holds when every selector holds.
type allOf []selector

func (cs allOf) Match(a Adaptor) bool {
	for _, c := range cs {
		if !c.match(a) {
			return false
		}
	}
	return true
}

// anyOf holds when one filter holds.
type anyOf []Filter

func (fs anyOf) Match(a Adaptor) bool {
	for _, f := range fs {
		if f.Match(a) {
			return true
		}
	}
	return false
}

// Bounds on what Parse takes, so that a request cannot size its work:
// real filters are a few selectors long.
const (
	MaxExprs      = 64
	MaxExprLength = 4096
)

// Parse parses exprs into a Filter that matches when any of them matches.
// A syntax error, more than MaxExprs expressions or one longer than
// MaxExprLength is InvalidArgument naming the expression.
func Parse(exprs ...string) (Filter, error) {
	var (
		out anyOf
		all = len(exprs) == 0
	)
	if len(exprs) > MaxExprs {
		return nil, fmt.Errorf("%d filters, more than %d: %w", len(exprs), MaxExprs, errdefs.ErrInvalidArgument)
	}
	for _, expr := range exprs {
		if len(expr) > MaxExprLength {
			return nil, fmt.Errorf("filter %q...: longer than %d bytes: %w", expr[:64], MaxExprLength, errdefs.ErrInvalidArgument)
		}
		if expr == "" {
			all = true
			continue
		}
		sels, err := parse(expr)
		if err != nil {
			return nil, fmt.Errorf("filter %q: %v: %w", expr, err, errdefs.ErrInvalidArgument)
		}
		out = append(out, sels)
	}
	if all {
		return Always, nil
	}
	return out, nil
}

// Match reports whether a matches f; a nil Filter matches everything.
func Match(f Filter, a Adaptor) bool {
	return f == nil || f.Match(a)
}

// eof is what parser.peek returns at the end of the input.
const eof = -1

type parser struct {
	s   string
	pos int
}

func parse(expr string) (allOf, error) {
	// NUL, U+FFFD and bytes that are not UTF-8 are refused wherever they
	// stand, so each step below can read runes without checking.
	if !utf8.ValidString(expr) || strings.ContainsRune(expr, 0) || strings.ContainsRune(expr, utf8.RuneError) {
		return nil, fmt.Errorf("not printable UTF-8")
	}
	p := &parser{s: expr}
	var sels allOf
	for {
		c, err := p.selector()
		if err != nil {
			return nil, err
		}
		sels = append(sels, c)
		switch p.peek() {
		case eof:
			return sels, nil
		case ',':
			p.next()
		default:
			return nil, p.errorf("unexpected %q", p.peek())
		}
	}
}

func (p *parser) peek() rune {
	if p.pos >= len(p.s) {
		return eof
	}
	r, _ := utf8.DecodeRuneInString(p.s[p.pos:])
	return r
}

func (p *parser) next() rune {
	r := p.peek()
	if r != eof {
		p.pos += utf8.RuneLen(r)
	}
	return r
}

func (p *parser) skipSpace() {
	for unicode.IsSpace(p.peek()) {
		p.next()
	}
}

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("at offset %d: %s", p.pos, fmt.Sprintf(format, args...))
}

func (p *parser) selector() (selector, error) {
	var c selector
	for {
		seg, err := p.field()
		if err != nil {
			return c, err
		}
		c.path = append(c.path, seg)
		if p.peek() != '.' {
			break
		}
		p.next()
	}
	if r := p.peek(); r == ',' || r == eof {
		return c, nil
	}

	p.skipSpace()
	start := p.pos
	for isOperatorRune(p.peek()) {
		p.next()
	}
	switch p.s[start:p.pos] {
	case "==":
		c.op = opEqual
	case "!=":
		c.op = opNotEqual
	case "~=":
		c.op = opMatch
	default:
		p.pos = start
		return c, p.errorf(`expected an operator ("==", "!=" or "~=")`)
	}

	var err error
	if c.value, err = p.value(c.op == opMatch); err != nil {
		return c, err
	}
	if c.op == opMatch {
		c.re, _ = regexp.Compile(c.value)
	}
	return c, nil
}

func isOperatorRune(r rune) bool { return r == '=' || r == '!' || r == '~' }

func isFieldRune(r rune) bool {
	return r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
}

// field reads one segment of a field path: a name or a "quoted" string.
func (p *parser) field() (string, error) {
	p.skipSpace()
	switch r := p.peek(); {
	case r == '"':
		return p.quoted()
	case isFieldRune(r):
		start := p.pos
		for isFieldRune(p.peek()) {
			p.next()
		}
		return p.s[start:p.pos], nil
	}
	return "", p.errorf("expected a field name or a quoted string")
}

// value reads the value after an operator; regexp allows /.../ and |...|.
func (p *parser) value(regexp bool) (string, error) {
	p.skipSpace()
	switch r := p.peek(); r {
	case '"':
		return p.quoted()
	case '/', '|':
		if regexp {
			return p.quoted()
		}
		return "", p.errorf("%q quotes only a regular expression", r)
	case eof, ',', '.', '=', '!', '~':
		return "", p.errorf("expected a value")
	}
	start := p.pos
	p.next()
	for r := p.peek(); r != eof && r != ',' && !unicode.IsSpace(r) && unicode.IsGraphic(r); r = p.peek() {
		p.next()
	}
	return p.s[start:p.pos], nil
}

// quoted reads a string between the quote at the current position and the
// next unescaped one, decoding Go's escapes; \<quote> is the quote itself.
func (p *parser) quoted() (string, error) {
	start := p.pos
	quote := p.next()
	var b []byte
	for {
		r := p.next()
		switch r {
		case quote:
			return string(b), nil
		case eof, '\n':
			p.pos = start
			return "", p.errorf("quoted string not terminated")
		case '\\':
			var err error
			if b, err = p.escape(b, quote); err != nil {
				return "", err
			}
		default:
			b = utf8.AppendRune(b, r)
		}
	}
}

var simpleEscapes = map[rune]byte{'a': '\a', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v', '\\': '\\'}

// escape decodes the escape after a backslash and appends it to b.
func (p *parser) escape(b []byte, quote rune) ([]byte, error) {
	at := p.pos - 1
	r := p.next()
	if c, ok := simpleEscapes[r]; ok {
		return append(b, c), nil
	}
	if r == quote {
		return utf8.AppendRune(b, r), nil
	}
	digits, base := 0, 16
	switch r {
	case '0', '1', '2', '3', '4', '5', '6', '7':
		p.pos--
		digits, base = 3, 8
	case 'x':
		digits = 2
	case 'u':
		digits = 4
	case 'U':
		digits = 8
	default:
		p.pos = at
		return nil, p.errorf("bad escape sequence")
	}
	var v uint64
	for range digits {
		d := digitValue(p.next())
		if d >= base {
			p.pos = at
			return nil, p.errorf("bad escape sequence")
		}
		v = v*uint64(base) + uint64(d)
	}
	switch {
	// containerd reads \U into an int32: 80000000 and above wrap negative,
	// pass its range check and decode to U+FFFD below, as keel takes them.
	case base == 8 && v > 255, v > unicode.MaxRune && int32(v) >= 0:
		p.pos = at
		return nil, p.errorf("escape out of range")
	case base == 8 || r == 'x' || v < utf8.RuneSelf:
		return append(b, byte(v)), nil
	}
	// Surrogate halves are not refused; they decode to U+FFFD.
	return utf8.AppendRune(b, rune(v)), nil
}

func digitValue(r rune) int {
	switch {
	case r >= '0' && r <= '9':
		return int(r - '0')
	case r >= 'a' && r <= 'f':
		return int(r-'a') + 10
	case r >= 'A' && r <= 'F':
		return int(r-'A') + 10
	}
	return 16
}
