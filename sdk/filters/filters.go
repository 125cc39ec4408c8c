// Package filters parses and applies containerd's filter syntax, used by
// every Walk and List call that takes filters.
//
// A filter is a list of expressions; it matches an object when ANY
// expression matches. An expression is a comma-separated list of
// conditions, all of which must hold:
//
//	field==value   the field is present and equals value
//	field!=value   the field is absent or differs from value
//	field~=regexp  the field is present and matches the regular expression
//	field          the field is present
//
// A field is a dotted path. A segment that holds dots or other punctuation
// is double-quoted: labels."io.keel/gc.root". A value is a bare word (any
// characters but whitespace, ',' and quotes), a double-quoted Go string, or,
// after ~=, a /slash-delimited/ regular expression in which \/ is a slash.
//
//	Parse(`labels."io.keel/x"==v,size`, `digest~=^sha256:ab`)
//
// No expressions, or only empty ones, match everything.
package filters

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// Adaptor exposes an object's fields to a Filter. Field returns the value at
// path and whether the field is present.
type Adaptor interface {
	Field(path []string) (value string, present bool)
}

// AdaptorFunc lets a function be an Adaptor.
type AdaptorFunc func(path []string) (string, bool)

// Field calls f.
func (f AdaptorFunc) Field(path []string) (string, bool) { return f(path) }

// Filter decides whether an object matches.
type Filter interface {
	Match(Adaptor) bool
}

// Always matches everything.
var Always Filter = anyOf(nil)

type operator int

const (
	opPresent operator = iota
	opEqual
	opNotEqual
	opMatch
)

func (o operator) String() string {
	switch o {
	case opEqual:
		return "=="
	case opNotEqual:
		return "!="
	case opMatch:
		return "~="
	}
	return ""
}

type condition struct {
	path  []string
	op    operator
	value string
	re    *regexp.Regexp
}

func (c condition) match(a Adaptor) bool {
	v, ok := a.Field(c.path)
	switch c.op {
	case opPresent:
		return ok
	case opEqual:
		return ok && v == c.value
	case opNotEqual:
		return !ok || v != c.value
	case opMatch:
		return ok && c.re.MatchString(v)
	}
	return false
}

// allOf holds when every condition holds.
type allOf []condition

func (cs allOf) Match(a Adaptor) bool {
	for _, c := range cs {
		if !c.match(a) {
			return false
		}
	}
	return true
}

// anyOf holds when one expression holds; an empty anyOf matches everything.
type anyOf []allOf

func (es anyOf) Match(a Adaptor) bool {
	if len(es) == 0 {
		return true
	}
	for _, e := range es {
		if e.Match(a) {
			return true
		}
	}
	return false
}

// Parse parses exprs into a Filter that matches when any of them matches.
// Empty expressions are ignored; a syntax error is InvalidArgument naming
// the expression.
func Parse(exprs ...string) (Filter, error) {
	var out anyOf
	for _, expr := range exprs {
		if strings.TrimSpace(expr) == "" {
			continue
		}
		conds, err := parseExpr(expr)
		if err != nil {
			return nil, fmt.Errorf("filter %q: %v: %w", expr, err, errdefs.ErrInvalidArgument)
		}
		out = append(out, conds)
	}
	return out, nil
}

// Match reports whether a matches f; a nil Filter matches everything.
func Match(f Filter, a Adaptor) bool {
	return f == nil || f.Match(a)
}

type scanner struct {
	s   string
	pos int
}

func (sc *scanner) skipSpace() {
	for sc.pos < len(sc.s) && (sc.s[sc.pos] == ' ' || sc.s[sc.pos] == '\t') {
		sc.pos++
	}
}

func (sc *scanner) eof() bool { return sc.pos >= len(sc.s) }

func (sc *scanner) peek() byte {
	if sc.eof() {
		return 0
	}
	return sc.s[sc.pos]
}

func parseExpr(expr string) (allOf, error) {
	sc := &scanner{s: expr}
	var conds allOf
	for {
		c, err := sc.condition()
		if err != nil {
			return nil, err
		}
		conds = append(conds, c)
		sc.skipSpace()
		if sc.eof() {
			return conds, nil
		}
		if sc.peek() != ',' {
			return nil, fmt.Errorf("unexpected %q at offset %d", sc.peek(), sc.pos)
		}
		sc.pos++
	}
}

func (sc *scanner) condition() (condition, error) {
	var c condition
	path, err := sc.fieldPath()
	if err != nil {
		return c, err
	}
	c.path = path
	sc.skipSpace()
	if sc.eof() || sc.peek() == ',' {
		return c, nil
	}
	switch {
	case strings.HasPrefix(sc.s[sc.pos:], "=="):
		c.op = opEqual
	case strings.HasPrefix(sc.s[sc.pos:], "!="):
		c.op = opNotEqual
	case strings.HasPrefix(sc.s[sc.pos:], "~="):
		c.op = opMatch
	default:
		return c, fmt.Errorf("expected operator at offset %d", sc.pos)
	}
	sc.pos += 2
	sc.skipSpace()
	c.value, err = sc.value(c.op == opMatch)
	if err != nil {
		return c, err
	}
	if c.op == opMatch {
		if c.re, err = regexp.Compile(c.value); err != nil {
			return c, fmt.Errorf("bad regular expression %q: %v", c.value, err)
		}
	}
	return c, nil
}

func isFieldByte(b byte) bool {
	return b == '_' || b == '-' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}

func (sc *scanner) fieldPath() ([]string, error) {
	sc.skipSpace()
	var path []string
	for {
		var seg string
		if sc.peek() == '"' {
			q, err := sc.quoted()
			if err != nil {
				return nil, err
			}
			seg = q
		} else {
			start := sc.pos
			for !sc.eof() && isFieldByte(sc.peek()) {
				sc.pos++
			}
			seg = sc.s[start:sc.pos]
		}
		if seg == "" {
			return nil, fmt.Errorf("expected field name at offset %d", sc.pos)
		}
		path = append(path, seg)
		if sc.peek() != '.' {
			return path, nil
		}
		sc.pos++
	}
}

// quoted scans a double-quoted Go string at the current position.
func (sc *scanner) quoted() (string, error) {
	start := sc.pos
	sc.pos++
	for !sc.eof() {
		switch sc.s[sc.pos] {
		case '\\':
			sc.pos += 2
			continue
		case '"':
			sc.pos++
			v, err := strconv.Unquote(sc.s[start:sc.pos])
			if err != nil {
				return "", fmt.Errorf("bad quoted string at offset %d", start)
			}
			return v, nil
		}
		sc.pos++
	}
	return "", fmt.Errorf("unterminated quoted string at offset %d", start)
}

func (sc *scanner) value(regex bool) (string, error) {
	switch sc.peek() {
	case '"':
		return sc.quoted()
	case '/':
		if regex {
			start := sc.pos
			sc.pos++
			var b strings.Builder
			for !sc.eof() {
				ch := sc.s[sc.pos]
				if ch == '\\' && sc.pos+1 < len(sc.s) && sc.s[sc.pos+1] == '/' {
					b.WriteByte('/')
					sc.pos += 2
					continue
				}
				if ch == '/' {
					sc.pos++
					return b.String(), nil
				}
				b.WriteByte(ch)
				sc.pos++
			}
			return "", fmt.Errorf("unterminated regular expression at offset %d", start)
		}
	}
	start := sc.pos
	for !sc.eof() {
		ch := sc.peek()
		if ch == ',' || ch == ' ' || ch == '\t' || ch == '"' {
			break
		}
		sc.pos++
	}
	if sc.pos == start {
		return "", fmt.Errorf("expected value at offset %d", start)
	}
	return sc.s[start:sc.pos], nil
}
