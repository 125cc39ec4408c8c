package diff

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// ent is one tar entry of a test layer.
type ent struct {
	name   string
	typ    byte
	mode   int64
	body   string
	link   string
	uid    int
	gid    int
	major  int64
	minor  int64
	xattrs map[string]string
	mtime  time.Time
	atime  time.Time
}

var epoch = time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)

func file(name, body string) ent { return ent{name: name, typ: tar.TypeReg, mode: 0o644, body: body} }
func dir(name string) ent        { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) ent {
	return ent{name: name, typ: tar.TypeSymlink, mode: 0o777, link: target}
}
func hardlink(name, target string) ent { return ent{name: name, typ: tar.TypeLink, link: target} }

// layer builds a plain tar from ents.
func layer(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		mt := e.mtime
		if mt.IsZero() {
			mt = epoch
		}
		h := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link,
			Uid: e.uid, Gid: e.gid, Devmajor: e.major, Devminor: e.minor,
			ModTime: mt, AccessTime: e.atime, Format: tar.FormatPAX,
		}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstded(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// tree lists everything below dir (name, type, size, link target, contents
// of small files), to compare before and after.
func tree(t testing.TB, dir string) string {
	t.Helper()
	var sb strings.Builder
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			sb.WriteString(p + " error " + err.Error() + "\n")
			return nil
		}
		fi, _ := d.Info()
		sb.WriteString(strings.TrimPrefix(p, dir) + " " + fi.Mode().String())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			sb.WriteString(" -> " + l)
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			sb.WriteString(" " + string(b))
		}
		sb.WriteString("\n")
		return nil
	})
	return sb.String()
}

// shortTree lists everything below root, one line each: the path, then
// d (dir), f and the contents (file), l and the target (symlink) or the
// mode.
func shortTree(t testing.TB, root string) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			lines = append(lines, p+" error "+err.Error())
			return nil
		}
		if p == root {
			return nil
		}
		name := strings.TrimPrefix(p, root)
		switch fi, _ := d.Info(); {
		case d.IsDir():
			lines = append(lines, name+" d")
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			lines = append(lines, name+" l "+l)
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			lines = append(lines, name+" f "+string(b))
		default:
			lines = append(lines, name+" "+fi.Mode().String())
		}
		return nil
	})
	return strings.Join(lines, "\n")
}

func readFile(root, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(root, name))
	return string(b), err
}
