package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

// ConfigKeyError is a plugin's refusal of one key of its `config {}` block,
// InvalidArgument. path is the key's dotted path in the block's JSON
// ("tls.verify"). Its message, `config key "<path>": <why>`, is all that
// crosses the wire; keeld reads the path back with ConfigKeyOf to point the
// error at the key's line in its config file.
func ConfigKeyError(path string, why error) error {
	if errdefs.IsInvalidArgument(why) {
		return fmt.Errorf("config key %q: %w", path, why)
	}
	return fmt.Errorf("config key %q: %w: %w", path, why, errdefs.ErrInvalidArgument)
}

// configKeyRe finds what ConfigKeyError writes, wherever it ends up in a
// message (keeld's prefixes come before it).
var configKeyRe = regexp.MustCompile(`config key ("(?:[^"\\]|\\.)*")`)

// ConfigKeyOf returns the key path a ConfigKeyError names in err's message.
func ConfigKeyOf(err error) (string, bool) {
	if err == nil {
		return "", false
	}
	m := configKeyRe.FindStringSubmatch(err.Error())
	if m == nil {
		return "", false
	}
	path, uerr := strconv.Unquote(m[1])
	return path, uerr == nil
}

// decodeConfigError names the key a JSON decoding error is about, when
// encoding/json says which: a value of the wrong type (its full path), an
// unknown key (its name only: encoding/json does not give the path).
func decodeConfigError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return ConfigKeyError(te.Field, fmt.Errorf("want %s, got %s", te.Type, te.Value))
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if key, uerr := strconv.Unquote(name); uerr == nil {
			return ConfigKeyError(key, errors.New("unknown key"))
		}
	}
	return fmt.Errorf("config: %v: %w", err, errdefs.ErrInvalidArgument)
}
