package sdk

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/keel-runtime/keel/sdk/errdefs"
)

func TestDecodeConfigNamesTheKey(t *testing.T) {
	type inner struct {
		Verify bool `json:"verify"`
	}
	type cfg struct {
		TLS  inner   `json:"tls"`
		Rule []inner `json:"rule"`
		N    int     `json:"n"`
	}
	for _, tt := range []struct {
		config, key, why string
	}{
		{`{"bogus": 1}`, "bogus", "unknown key"},
		{`{"tls": {"verify": true, "extra": 1}}`, "extra", "unknown key"}, // encoding/json gives no path
		{`{"tls": {"verify": "yes"}}`, "tls.verify", "want bool, got string"},
		{`{"rule": [{"verify": true}, {"verify": 1}]}`, "rule.verify", "want bool, got number"},
		{`{"n": "x"}`, "n", "want int, got string"},
		{`{"n": 1`, "", "unexpected EOF"},
	} {
		var c cfg
		err := Env{Config: []byte(tt.config)}.DecodeConfig(&c)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tt.why) {
			t.Errorf("%s: %v, want InvalidArgument saying %q", tt.config, err, tt.why)
		}
		// Across the wire only the message is left; keeld finds the key in it.
		key, ok := ConfigKeyOf(fmt.Errorf("resolver.docker: configure: %s", err.Error()))
		if key != tt.key || ok != (tt.key != "") {
			t.Errorf("%s: ConfigKeyOf = %q %v, want %q", tt.config, key, ok, tt.key)
		}
	}
	if err := ConfigKeyError(`a."b"`, errors.New("bad")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("ConfigKeyError is not InvalidArgument: %v", err)
	} else if key, _ := ConfigKeyOf(err); key != `a."b"` {
		t.Errorf("a quoted key comes back as %q", key)
	}
}
