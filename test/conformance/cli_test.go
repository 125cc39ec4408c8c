package conformance

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunCLIShim(t *testing.T) {
	var order []string
	addCLISuite("fake", func(ct T, path string, opts ...Option) {
		ct.Run("Passes", func(ct T) {
			ct.Cleanup(func() { order = append(order, "first") })
			ct.Cleanup(func() { order = append(order, "second") })
			ct.Logf("fine")
		})
		ct.Run("Fails", func(ct T) {
			ct.Fatalf("boom %d", 1)
			order = append(order, "unreachable")
		})
		ct.Run("Skips", func(ct T) { ct.Skipf("no capability") })
		ct.Run("Panics", func(ct T) { panic("oops") })
		ct.Run("FailsInCleanup", func(ct T) {
			ct.Cleanup(func() { order = append(order, "after") })
			ct.Cleanup(func() { ct.Fatalf("cleanup failed") })
		})
	})
	defer delete(cliSuites, "fake")
	bin := filepath.Join(t.TempDir(), "plugin")
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}

	var out bytes.Buffer
	failed, err := RunCLI("fake", bin, &out, "json")
	if err != nil || !failed {
		t.Fatalf("RunCLI = %v, %v; want failed", failed, err)
	}
	var rep Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, out.String())
	}
	want := map[string]string{"Passes": "pass", "Fails": "fail", "Skips": "skip", "Panics": "fail", "FailsInCleanup": "fail"}
	if len(rep.Cases) != len(want) || rep.Passed != 1 || rep.Failed != 3 || rep.Skipped != 1 {
		t.Fatalf("report %+v", rep)
	}
	for _, c := range rep.Cases {
		if want[c.Name] != c.Status {
			t.Errorf("case %s: %s, want %s (%v)", c.Name, c.Status, want[c.Name], c.Messages)
		}
	}
	if got := strings.Join(order, ","); got != "second,first,after" {
		t.Errorf("cleanup order %s", got)
	}

	out.Reset()
	if _, err := RunCLI("fake", bin, &out, "table"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "boom 1") || !strings.Contains(out.String(), "1 passed, 3 failed, 1 skipped") {
		t.Errorf("table:\n%s", out.String())
	}
	if _, err := RunCLI("nope", bin, &out, "table"); err == nil {
		t.Error("unknown kind accepted")
	}
}
