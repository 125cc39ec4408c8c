package host

import (
	"bufio"
	"encoding/json"
	"io"
	"sort"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// logStderr relays a plugin's stderr into logger, which is named after the
// instance. Serve makes plugins log hclog JSON; each line is re-emitted at
// its level with its fields in order, without the plugin's timestamp and
// caller (the host's logger adds its own). Other lines (a Go panic, a
// wrapper script) are kept verbatim: at Error once a panic started, at Info
// otherwise.
func logStderr(logger hclog.Logger, r io.ReadCloser) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	panicking := false
	for sc.Scan() {
		line := sc.Bytes()
		var entry map[string]any
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &entry) != nil {
			text := string(line)
			if strings.HasPrefix(text, "panic: ") || strings.HasPrefix(text, "fatal error: ") {
				panicking = true
			}
			if panicking {
				logger.Error(text)
			} else {
				logger.Info(text)
			}
			continue
		}
		l := logger
		if m, ok := entry["@module"].(string); ok && m != "" {
			l = logger.Named(m)
		}
		level := hclog.Info
		if s, ok := entry["@level"].(string); ok {
			if lv := hclog.LevelFromString(s); lv != hclog.NoLevel {
				level = lv
			}
		}
		msg, _ := entry["@message"].(string)
		keys := make([]string, 0, len(entry))
		for k := range entry {
			if !strings.HasPrefix(k, "@") {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		args := make([]any, 0, 2*len(keys))
		for _, k := range keys {
			args = append(args, k, entry[k])
		}
		l.Log(level, msg, args...)
	}
	if err := sc.Err(); err != nil {
		logger.Warn("reading plugin log failed", "error", err)
	}
}
