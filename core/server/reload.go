package server

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/keel-runtime/keel/core/config"
)

// reconfigureTimeout bounds the restart of one plugin with a new config.
const reconfigureTimeout = 2 * time.Minute

// reloadState is the config keeld runs with, as reloads changed it.
type reloadState struct {
	mu      sync.Mutex
	applied *config.Config // nil: s.cfg
}

// Reload applies what of next can change while keeld runs, and logs the
// rest, with why: the log level (at once), and each plugin's config block,
// by restarting that plugin alone with its new config (a plugin that
// refuses it keeps its previous one). Every other change (root, state,
// socket, log_format, a plugin added or removed, its path…) needs a
// restart of keeld and is logged as not applied. Reload never stops keeld.
func (s *Server) Reload(ctx context.Context, next *config.Config) {
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	cur := s.reload.applied
	if cur == nil {
		cur = s.cfg
	}
	applied := *cur
	applied.Plugins = slices.Clone(cur.Plugins)

	s.logger.Info("reloading the config", "file", next.File)
	if next.LogLevel != cur.LogLevel {
		s.logger.SetLevel(hclog.LevelFromString(next.LogLevel))
		applied.LogLevel = next.LogLevel
		s.logger.Info("log level changed", "from", cur.LogLevel, "to", next.LogLevel)
	}
	needRestart := changedKeys(cur, next, "log_level", "plugins")
	for i := range applied.Plugins {
		p := &applied.Plugins[i]
		np := next.Plugin(p.Kind, p.Name)
		if np == nil {
			needRestart = append(needRestart, "plugin "+p.Instance()+" removed")
			continue
		}
		keys := changedKeys(p, np)
		for _, key := range keys {
			if key != "config" {
				needRestart = append(needRestart, "plugin "+p.Instance()+" "+key)
			}
		}
		if !slices.Contains(keys, "config") {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, reconfigureTimeout)
		restarted, err := s.plugins.Reconfigure(rctx, p.Kind, p.Name, np.Config)
		cancel()
		if err != nil {
			s.logger.Error("plugin config not applied", "plugin", p.Instance(), "error", next.PluginError(p.Kind, p.Name, err))
			continue
		}
		p.Config = np.Config
		s.logger.Info("plugin config applied", "plugin", p.Instance(), "restarted", restarted)
	}
	for _, np := range next.Plugins {
		if cur.Plugin(np.Kind, np.Name) == nil {
			needRestart = append(needRestart, "plugin "+np.Instance()+" added")
		}
	}
	for _, what := range needRestart {
		s.logger.Warn("not applied, needs a restart: " + what)
	}
	s.reload.applied = &applied
}

// changedKeys lists the top-level JSON keys whose values differ between a
// and b, but for those skipped, sorted. json.Marshal writes both compact,
// so bytes compare.
func changedKeys(a, b any, skip ...string) []string {
	ma, mb := jsonFields(a), jsonFields(b)
	var out []string
	for _, k := range slices.Sorted(maps.Keys(mb)) {
		if va, ok := ma[k]; (!ok || !bytes.Equal(va, mb[k])) && !slices.Contains(skip, k) {
			out = append(out, k)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(ma)) {
		if _, ok := mb[k]; !ok && !slices.Contains(skip, k) {
			out = append(out, k)
		}
	}
	return out
}

func jsonFields(v any) map[string]json.RawMessage {
	b, _ := json.Marshal(v)
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	return m
}

// AppliedConfig is the config keeld runs with: the one it started with,
// with what reloads applied.
func (s *Server) AppliedConfig() *config.Config {
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	if s.reload.applied != nil {
		return s.reload.applied
	}
	return s.cfg
}
