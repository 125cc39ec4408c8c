package config

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestHCLRoundTrip: every golden case that parses, dumped as HCL, parses
// to the same config (its gc, events, limits, network and cri blocks written out with
// their defaults), and dumping that again gives the same file.
func TestHCLRoundTrip(t *testing.T) {
	files, err := filepath.Glob("testdata/*.hcltest")
	if err != nil {
		t.Fatal(err)
	}
	limits := Limits{MaxLayers: 128, MaxLayerSize: 16 << 30, MaxLayerUnpackedSize: 32 << 30, MaxImageUnpackedSize: 64 << 30,
		MaxUnpackRatio: 100, MaxManifestSize: 8 << 20, MaxIndexManifests: 256, MaxArchiveEntries: 100000}
	cases := 0
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		input, _, _ := bytes.Cut(data, []byte("\n"+separator))
		c, err := Parse(input, filepath.Base(file))
		if err != nil {
			continue // an error case
		}
		cases++
		t.Run(strings.TrimSuffix(filepath.Base(file), ".hcltest"), func(t *testing.T) {
			out, err := c.HCL(limits)
			if err != nil {
				t.Fatal(err)
			}
			c2, err := Parse(out, "dump.hcl")
			if err != nil {
				t.Fatalf("dump does not parse: %v\n%s", err, out)
			}
			a, b := fields(t, c), fields(t, c2)
			for _, k := range []string{"gc", "events", "limits", "network", "cri"} {
				delete(a, k)
				delete(b, k)
			}
			if ja, jb := mustJSON(t, a), mustJSON(t, b); ja != jb {
				t.Fatalf("dump parses to\n%s\nwant\n%s\ndump:\n%s", jb, ja, out)
			}
			if n1, n2 := mustJSON(t, c.NetworkConfig()), mustJSON(t, c2.NetworkConfig()); n1 != n2 {
				t.Errorf("network %s, want %s", n2, n1)
			}
			if c1, c2 := mustJSON(t, c.CRIConfig()), mustJSON(t, c2.CRIConfig()); c1 != c2 {
				t.Errorf("cri %s, want %s", c2, c1)
			}
			if c2.GCInterval() != c.GCInterval() || c2.GCIngestMaxAge() != c.GCIngestMaxAge() {
				t.Errorf("gc %v %v, want %v %v", c2.GCInterval(), c2.GCIngestMaxAge(), c.GCInterval(), c.GCIngestMaxAge())
			}
			if c2.EventsWindow() != c.EventsWindow() {
				t.Errorf("events window %d, want %d", c2.EventsWindow(), c.EventsWindow())
			}
			again, err := c2.HCL(limits)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, out) {
				t.Errorf("dump of the dump differs:\n%s\nfirst:\n%s", again, out)
			}
		})
	}
	if cases == 0 {
		t.Fatal("no golden case parses")
	}
}

func fields(t *testing.T, c *Config) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(mustJSON(t, c)), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
