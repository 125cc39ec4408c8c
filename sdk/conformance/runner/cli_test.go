package runner

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keel-runtime/keel/sdk/conformance"
)

func TestRunCLIShim(t *testing.T) {
	var order []string
	cliSuites["fake"] = func(ct conformance.T, path string, opts ...conformance.Option) {
		ct.Run("Passes", func(ct conformance.T) {
			ct.Cleanup(func() { order = append(order, "first") })
			ct.Cleanup(func() { order = append(order, "second") })
			ct.Logf("fine")
		})
		ct.Run("Fails", func(ct conformance.T) {
			ct.Fatalf("boom %d", 1)
			order = append(order, "unreachable")
		})
		ct.Run("Skips", func(ct conformance.T) { ct.Skipf("no capability") })
		ct.Run("Panics", func(ct conformance.T) { panic("oops") })
		ct.Run("FailsInCleanup", func(ct conformance.T) {
			ct.Cleanup(func() { order = append(order, "after") })
			ct.Cleanup(func() { ct.Fatalf("cleanup failed") })
		})
	}
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

// TestWriteTable: case rows stay aligned and narrow whatever the messages
// hold; messages of cases that did not pass follow their row, indented;
// no line ends in spaces; JSON is not affected (it is the Report as is).
func TestWriteTable(t *testing.T) {
	long := `{"@level":"debug","@message":"` + strings.Repeat("x", 300) + `","@module":"snapshotter.copy"}`
	rep := Report{
		Kind: "snapshotter", Plugin: "/bin/p", Passed: 1, Failed: 1, Skipped: 1,
		Cases: []Result{
			{Name: "Lifecycle", Status: "pass", Duration: 1500 * time.Microsecond, Messages: []string{"chatty pass"}},
			{Name: "RemoveParentWithChildren", Status: "fail", Duration: time.Second,
				Messages: []string{"remove base: got <nil>, want a FailedPrecondition error", "plugin log:\n" + long + "\n\tindented  \n"}},
			{Name: "Cleanup", Status: "skip", Messages: []string{`plugin lacks capability "cleanup"`}},
		},
	}
	var out bytes.Buffer
	if err := writeTable(&out, rep); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"CASE                      RESULT  TIME\n" +
		"Lifecycle                 PASS    2ms\n" +
		"RemoveParentWithChildren  FAIL    1s\n" +
		"    remove base: got <nil>, want a FailedPrecondition error\n" +
		"    plugin log:\n" +
		"    " + long + "\n" +
		"    \tindented\n" +
		"Cleanup                   SKIP    0s\n" +
		"    plugin lacks capability \"cleanup\"\n" +
		"snapshotter /bin/p: 1 passed, 1 failed, 1 skipped\n"
	if out.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", out.String(), want)
	}
}
