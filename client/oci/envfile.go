package oci

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// maxEnvLine is the longest line an env file may have.
const maxEnvLine = 1 << 20

// ParseEnvFile reads Docker's env-file format: one KEY=VALUE a line, the
// value taken verbatim (no quotes, no expansion); blank lines and lines
// whose first non-blank character is # are skipped; a bare KEY takes its
// value from lookup (os.LookupEnv for the host's) and is left out when
// lookup has none. Errors name name:line.
func ParseEnvFile(r io.Reader, name string, lookup func(string) (string, bool)) ([]string, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxEnvLine)
	var env []string
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if n == 1 {
			line = bytes.TrimPrefix(line, []byte("\xef\xbb\xbf")) // a UTF-8 BOM
		}
		bad := func(format string, a ...any) error {
			return fmt.Errorf("env file %s:%d: %s: %w", name, n, fmt.Sprintf(format, a...), errdefs.ErrInvalidArgument)
		}
		if !utf8.Valid(line) {
			return nil, bad("not UTF-8")
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return nil, bad("a NUL byte")
		}
		text := strings.TrimLeftFunc(string(line), unicode.IsSpace)
		// A CRLF file's lines end in \r; Docker keeps it in the value, which
		// is never what was meant in a key.
		if text == "" || text == "\r" || strings.HasPrefix(text, "#") {
			continue
		}
		key, value, hasValue := strings.Cut(text, "=")
		if !hasValue {
			key = strings.TrimRightFunc(key, unicode.IsSpace)
		}
		switch {
		case key == "":
			return nil, bad("no variable name before =")
		case strings.IndexFunc(key, unicode.IsSpace) >= 0:
			return nil, bad("variable %q has white space in its name", key)
		}
		if !hasValue {
			v, ok := lookup(key)
			if !ok {
				continue
			}
			value = v
		}
		env = append(env, key+"="+value)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("env file %s:%d: %w: %w", name, n+1, err, errdefs.ErrInvalidArgument)
	}
	return env, nil
}

// WithEnvFile adds the variables of the env file at path (ParseEnvFile's
// format; bare keys take the caller's environment), replacing those of
// the same name.
func WithEnvFile(path string) SpecOpt {
	return func(ctx context.Context, s *Spec) error {
		b, err := readFileLimited(path, "env file")
		if err != nil {
			return err
		}
		env, err := ParseEnvFile(bytes.NewReader(b), path, os.LookupEnv)
		if err != nil {
			return err
		}
		s.Process.Env = mergeEnv(s.Process.Env, env)
		return nil
	}
}
