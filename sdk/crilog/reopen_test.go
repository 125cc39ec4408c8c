package crilog

import (
	"os"
	"path/filepath"
	"testing"
)

// The kubelet rotates a container's log by renaming it: the next record
// goes to a new file at the path, the old one keeps what it had.
func TestFileReopensRenamedPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	l, err := Open(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	if err := l.Write("stdout", false, []byte("before")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".20260101"); err != nil {
		t.Fatal(err)
	}
	if err := l.Write("stdout", false, []byte("after")); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{path + ".20260101": "before", path: "after"} {
		recs, err := ReadAll(file)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 1 || string(recs[0].Content) != want {
			t.Errorf("%s: records %+v, want one %q", filepath.Base(file), recs, want)
		}
	}
}
